import { describe, expect, it } from "vitest";
import { ApiError, CmkApi, errorMessage, route } from "./client";
import { setSession, getSession } from "../auth/session";
import { fakeFetch, jwt } from "../test/fakeServer";

describe("CmkApi", () => {
  it("sends the bearer token and returns JSON", async () => {
    const token = jwt({ sub: "a", "openkcm:roles": ["auditor"], exp: Date.now() / 1000 + 60 });
    setSession(token);
    let auth = "";
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/accounts/acme/tenants": ({ headers }) => { auth = headers.Authorization; return { body: { items: [{ tenant_id: "t1", account: "a", status: "active" }] } }; },
    }));
    const page = await api.listTenants("acme");
    expect(page.items[0].tenant_id).toBe("t1");
    expect(auth).toBe(`Bearer ${token}`);
  });

  it("turns the API's error body into the message shown, field first", async () => {
    const api = new CmkApi("http://api.test", fakeFetch({
      "POST /v1/accounts/acme/keystores": () => ({ status: 400, body: { error: "validation_error", message: "must be a KMS key ARN", details: { field: "config.key_arn" } } }),
    }));
    const err = await api.createKeystore("acme", { provider: "aws-kms", name: "n", config: {}, secrets: {} }).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(400);
    expect(err.message).toBe("config.key_arn: must be a KMS key ARN");
  });

  it("signs out on 401", async () => {
    setSession(jwt({ sub: "a", "openkcm:roles": ["auditor"], exp: Date.now() / 1000 + 60 }));
    let told = false;
    const api = new CmkApi("http://api.test", fakeFetch({ "GET /v1/accounts/acme/tenants": () => ({ status: 401, body: { error: "unauthenticated", message: "token expired" } }) }), () => { told = true; });
    await expect(api.listTenants("acme")).rejects.toThrow("token expired");
    expect(told).toBe(true);
    expect(getSession()).toBeNull();
  });

  it("reports an unreachable API plainly", async () => {
    const api = new CmkApi("http://api.test", (async () => { throw new TypeError("Failed to fetch"); }) as unknown as typeof fetch);
    await expect(api.listTenants("acme")).rejects.toThrow(/not reachable/);
  });

  it("understands other common error shapes", () => {
    expect(errorMessage(403, { error: { message: "needs mfa" } }).message).toBe("needs mfa");
    expect(errorMessage(502, "Bad gateway").message).toBe("Bad gateway");
    expect(errorMessage(500, null).message).toBe("The API answered 500.");
  });
});

describe("route", () => {
  it("fills and encodes the OpenAPI path template", () => {
    expect(route("/v1/tenants/{tenant_id}/certificates/{serial}/revoke", { tenant_id: "t 1", serial: "0a" })).toBe("/v1/tenants/t%201/certificates/0a/revoke");
    expect(() => route("/v1/tenants/{tenant_id}", {})).toThrow(/tenant_id/);
  });
});
