/** OIDC authorization code flow with PKCE (S256) against the configured issuer. */
import type { UiConfig } from "../config";
import { challengeFor, randomToken } from "./pkce";
import { setSession, type Session } from "./session";

export interface Discovery {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
}

const PENDING = "openkcm.pkce";

export async function discover(config: UiConfig, fetcher: typeof fetch = fetch): Promise<Discovery> {
  const reply = await fetcher(`${config.issuer}/.well-known/openid-configuration`);
  if (!reply.ok) throw new Error(`The sign-in service is not reachable (${reply.status}).`);
  const doc = (await reply.json()) as Discovery;
  if (!doc.authorization_endpoint || !doc.token_endpoint) {
    throw new Error("The sign-in service's discovery document has no authorization or token endpoint.");
  }
  return doc;
}

/** Builds the authorization URL and remembers verifier and state for this tab. */
export async function beginSignIn(config: UiConfig, discovery: Discovery, returnTo = "/"): Promise<string> {
  const verifier = randomToken(32);
  const state = randomToken(16);
  const nonce = randomToken(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, nonce, returnTo }));
  const url = new URL(discovery.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: config.clientId,
    redirect_uri: config.redirectUri,
    scope: "openid",
    state,
    nonce,
    code_challenge: await challengeFor(verifier),
    code_challenge_method: "S256",
  }).toString();
  return url.toString();
}

/** Handles /callback?code=..&state=..: checks state, redeems the code with the verifier. */
export async function completeSignIn(
  config: UiConfig,
  discovery: Discovery,
  search: string,
  fetcher: typeof fetch = fetch,
): Promise<{ session: Session; returnTo: string }> {
  const params = new URLSearchParams(search);
  const error = params.get("error");
  if (error) throw new Error(`Sign-in was refused: ${params.get("error_description") ?? error}`);
  const pendingRaw = sessionStorage.getItem(PENDING);
  sessionStorage.removeItem(PENDING);
  if (!pendingRaw) throw new Error("No sign-in was started in this tab. Please sign in again.");
  const pending = JSON.parse(pendingRaw) as { verifier: string; state: string; returnTo: string };
  const code = params.get("code");
  if (!code || params.get("state") !== pending.state) {
    throw new Error("The sign-in response does not match the request (state). Please sign in again.");
  }
  const reply = await fetcher(discovery.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code,
      redirect_uri: config.redirectUri,
      client_id: config.clientId,
      code_verifier: pending.verifier,
    }).toString(),
  });
  const body = (await reply.json().catch(() => ({}))) as Record<string, string>;
  if (!reply.ok || !body.access_token) {
    throw new Error(`The token request failed: ${body.error_description ?? body.error ?? reply.status}`);
  }
  return { session: setSession(body.access_token), returnTo: pending.returnTo || "/" };
}
