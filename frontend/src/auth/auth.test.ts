import { describe, expect, it } from "vitest";
import { beginSignIn, completeSignIn, discover, type Discovery } from "./oidc";
import { base64url, challengeFor, randomToken } from "./pkce";
import { clearSession, decodeClaims, getSession, isExpired } from "./session";
import { jwt } from "../test/fakeServer";
import type { UiConfig } from "../config";

const config: UiConfig = { apiBase: "http://api.test", issuer: "http://api.test/oidc", clientId: "openkcm-ui", redirectUri: "http://ui.test/callback", kmipEndpoint: "127.0.0.1:5696" };
const discovery: Discovery = { issuer: config.issuer, authorization_endpoint: "http://api.test/oidc/authorize", token_endpoint: "http://api.test/oidc/token" };

describe("PKCE", () => {
  it("matches the RFC 7636 appendix B vector", async () => {
    expect(await challengeFor("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).toBe("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  });
  it("makes verifiers in the unreserved alphabet with 43+ characters, never twice the same", () => {
    const a = randomToken(32);
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(randomToken(32)).not.toBe(a);
    expect(base64url(new Uint8Array([251, 255]))).toBe("-_8");
  });
});

describe("OIDC code flow", () => {
  it("sends an S256 challenge of the stored verifier and redeems the code with it", async () => {
    const url = new URL(await beginSignIn(config, discovery, "/tenants/t1/keys"));
    expect(url.origin + url.pathname).toBe(discovery.authorization_endpoint);
    expect(url.searchParams.get("response_type")).toBe("code");
    expect(url.searchParams.get("code_challenge_method")).toBe("S256");
    expect(url.searchParams.get("redirect_uri")).toBe(config.redirectUri);
    const state = url.searchParams.get("state")!;
    const challenge = url.searchParams.get("code_challenge")!;

    let form: URLSearchParams | undefined;
    const token = jwt({ sub: "alice", "openkcm:account": "acme", "openkcm:roles": ["account-admin"], exp: Date.now() / 1000 + 600 });
    const fetcher = (async (_u: string, init: RequestInit) => {
      form = new URLSearchParams(String(init.body));
      return new Response(JSON.stringify({ access_token: token, token_type: "Bearer" }), { status: 200 });
    }) as unknown as typeof fetch;
    const { session, returnTo } = await completeSignIn(config, discovery, `?code=abc&state=${state}`, fetcher);
    expect(form!.get("grant_type")).toBe("authorization_code");
    expect(await challengeFor(form!.get("code_verifier")!)).toBe(challenge);
    expect(returnTo).toBe("/tenants/t1/keys");
    expect(session.claims).toMatchObject({ sub: "alice", account: "acme", roles: ["account-admin"] });
    expect(localStorage.length).toBe(0); // the token is kept per tab only
    expect(getSession()?.accessToken).toBe(token);
    clearSession();
    expect(getSession()).toBeNull();
  });

  it("refuses a response whose state does not match", async () => {
    await beginSignIn(config, discovery);
    await expect(completeSignIn(config, discovery, "?code=abc&state=forged")).rejects.toThrow(/state/);
  });

  it("reports the issuer's error and a failed token request", async () => {
    await expect(completeSignIn(config, discovery, "?error=access_denied&error_description=user+cancelled")).rejects.toThrow(/user cancelled/);
    const url = new URL(await beginSignIn(config, discovery));
    const fetcher = (async () => new Response(JSON.stringify({ error: "invalid_grant", error_description: "PKCE verification failed" }), { status: 400 })) as unknown as typeof fetch;
    await expect(completeSignIn(config, discovery, `?code=x&state=${url.searchParams.get("state")}`, fetcher)).rejects.toThrow(/PKCE verification failed/);
  });

  it("discovers endpoints and rejects an incomplete document", async () => {
    const ok = (async () => new Response(JSON.stringify(discovery))) as unknown as typeof fetch;
    expect((await discover(config, ok)).token_endpoint).toBe(discovery.token_endpoint);
    const bad = (async () => new Response(JSON.stringify({ issuer: "x" }))) as unknown as typeof fetch;
    await expect(discover(config, bad)).rejects.toThrow(/no authorization or token endpoint/);
  });
});

describe("claims", () => {
  it("decodes roles, account and amr; treats an expired token as signed out", () => {
    const c = decodeClaims(jwt({ sub: "bob", "openkcm:roles": ["auditor"], amr: ["pwd", "mfa"], exp: 100 }));
    expect(c.roles).toEqual(["auditor"]);
    expect(c.amr).toContain("mfa");
    expect(isExpired(c, 200)).toBe(true);
    expect(() => decodeClaims("not-a-jwt")).toThrow();
  });

  it("reads MFA from amr or from Cognito's openkcm:mfa claim, with the API's rule", () => {
    const mfa = (claims: Record<string, unknown>) => decodeClaims(jwt({ sub: "bob", ...claims })).mfa;
    expect(mfa({ amr: ["pwd", "mfa"] })).toBe(true);
    expect(mfa({ "openkcm:mfa": "true" })).toBe(true); // what infra_cdk/pretoken sets
    expect(mfa({ "openkcm:mfa": "TRUE" })).toBe(true); // str(v).lower() == "true"
    expect(mfa({ "openkcm:mfa": true })).toBe(true); // str(True).lower() == "true"
    expect(mfa({ "openkcm:mfa": "false" })).toBe(false);
    expect(mfa({ "openkcm:mfa": "yes" })).toBe(false);
    expect(mfa({ "openkcm:mfa": ["true"] })).toBe(false); // str(["true"]) is "['true']"
    expect(mfa({ amr: ["pwd"] })).toBe(false);
    expect(mfa({})).toBe(false);
  });
});
