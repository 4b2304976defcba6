import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { App } from "./App";
import { CmkApi } from "./api/client";
import { setSession } from "./auth/session";
import type { UiConfig } from "./config";
import { navigate } from "./lib/router";
import { fakeFetch, jwt } from "./test/fakeServer";

const config: UiConfig = { apiBase: "http://api.test", issuer: "http://api.test/oidc", clientId: "openkcm-ui", redirectUri: "http://localhost/callback", kmipEndpoint: "127.0.0.1:5696" };

function tenantsOf(account: string, ids: string[]) {
  return { body: { items: ids.map((id) => ({ tenant_id: id, account_id: account, status: "Ready", key_mode: "platform-managed", l1_state: "Inactive", current_l2_version: 1, rotation_period_days: 90 })) } };
}

const dashboard = (id: string) => ({ body: { tenant: { tenant_id: id, account_id: "acme", status: "Ready", key_mode: "platform-managed", l1_state: "Inactive", current_l2_version: 1, rotation_period_days: 90 },
  status: "Ready", key_mode: "platform-managed", master_key: { mode: "platform-managed", state: "Inactive" }, l2_versions: [], services: [], operations_per_day: [] } });

describe("app shell", () => {
  it("asks to sign in without a session", () => {
    navigate("/tenants/t1/keys", true);
    render(<App config={config} api={new CmkApi("http://api.test", fakeFetch({}))} notifications={false} />);
    expect(screen.getByRole("button", { name: "Sign in" })).toBeTruthy();
  });

  it("lands on the first tenant's dashboard and switches tenants", async () => {
    const user = userEvent.setup();
    setSession(jwt({ sub: "alice", "openkcm:account": "acme", "openkcm:roles": ["account-admin"], exp: Date.now() / 1000 + 600 }));
    navigate("/", true);
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/accounts/acme/tenants": () => tenantsOf("acme", ["t1", "t2"]),
      "GET /v1/tenants/t1/dashboard": () => dashboard("t1"),
      "GET /v1/tenants/t2/dashboard": () => dashboard("t2"),
    }));
    render(<App config={config} api={api} notifications={false} />);
    await waitFor(() => expect(window.location.pathname).toBe("/tenants/t1/dashboard"));
    expect(await screen.findByText("t1", { selector: "code" })).toBeTruthy();
    await user.selectOptions(screen.getByRole("combobox", { name: "Tenant" }), "t2");
    expect(window.location.pathname).toBe("/tenants/t2/dashboard");
    expect(await screen.findByText("t2", { selector: "code" })).toBeTruthy();
    expect(screen.getByRole("link", { name: "Dashboard" }).getAttribute("aria-current")).toBe("page");
  });

  it("takes a Cognito token's openkcm:mfa claim as MFA: no false HYOK warning", async () => {
    const user = userEvent.setup();
    setSession(jwt({ sub: "alice", "openkcm:account": "acme", "openkcm:roles": ["account-admin"], "openkcm:mfa": "true", exp: Date.now() / 1000 + 600 }));
    navigate("/tenants/t1/master-key", true);
    const api = new CmkApi("http://api.test", fakeFetch({ "GET /v1/accounts/acme/tenants": () => tenantsOf("acme", ["t1"]) }));
    render(<App config={config} api={api} notifications={false} />);
    await user.click(await screen.findByLabelText(/HYOK — PKCS#11/));
    expect(screen.getByTestId("who").textContent).toMatch(/MFA/);
    expect(screen.queryByText(/no second factor/)).toBeNull();
  });

  it("lets a platform operator pick the account", async () => {
    const user = userEvent.setup();
    setSession(jwt({ sub: "op", "openkcm:roles": ["platform-operator"], exp: Date.now() / 1000 + 600 }));
    navigate("/", true);
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/accounts": () => ({ body: { items: [{ account_id: "acme" }, { account_id: "globex" }] } }),
      "GET /v1/accounts/acme/tenants": () => tenantsOf("acme", ["t1"]),
      "GET /v1/accounts/globex/tenants": () => tenantsOf("globex", ["g1"]),
      "GET /v1/tenants/t1/dashboard": () => dashboard("t1"),
      "GET /v1/tenants/g1/dashboard": () => dashboard("g1"),
    }));
    render(<App config={config} api={api} notifications={false} />);
    await waitFor(() => expect(window.location.pathname).toBe("/tenants/t1/dashboard"));
    await user.selectOptions(screen.getByRole("combobox", { name: "Account" }), "globex");
    await waitFor(() => expect(window.location.pathname).toBe("/tenants/g1/dashboard"));
  });
});
