import { act, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { CmkApi } from "../api/client";
import { OpsChart } from "../components/OpsChart";
import { fakeFetch } from "../test/fakeServer";
import { Audit } from "./Audit";
import { Dashboard } from "./Dashboard";
import { MasterKeyWizard } from "./MasterKeyWizard";
import { mongoSettings, Services } from "./Services";

const ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

describe("master key wizard", () => {
  it("validates inline, lists failed checks with the missing permission, then saves and activates to Active", async () => {
    const user = userEvent.setup();
    let tests = 0;
    let polls = 0;
    const log: string[] = [];
    const api = new CmkApi("http://api.test", fakeFetch({
      "POST /v1/keystores": ({ body }) => ({ status: 201, body: { keystore_id: "ks1", type: "aws-kms", config: (body as { config: object }).config } }),
      "PUT /v1/keystores/ks1": ({ body }) => ({ body: { keystore_id: "ks1", type: "aws-kms", config: (body as { config: object }).config } }),
      "POST /v1/keystores/ks1/test": () => (++tests === 1
        ? { body: { ok: false, checks: [
            { name: "describe key", ok: true, detail: "key is Enabled" },
            { name: "encrypt", ok: false, detail: "AccessDenied", fix: "Add kms:Encrypt to the key policy for the OpenKCM role.", missing_permissions: ["kms:Encrypt"] },
          ] } }
        : { body: { ok: true, checks: [{ name: "describe key", ok: true }, { name: "encrypt", ok: true }, { name: "decrypt", ok: true }] } }),
      "POST /v1/l1-keys": () => ({ status: 201, body: { l1_id: "l1-a", keystore_id: "ks1", key_ref: ARN, tenants: [] } }),
      "POST /v1/l1-keys/l1-a/assignments": () => ({ body: { l1_id: "l1-a", keystore_id: "ks1", key_ref: ARN, tenants: ["t1"] } }),
      "POST /v1/tenants/t1/master-key": () => ({ status: 202, body: { operation_id: "op1", state: "running", progress: { done: 0, total: 2 } } }),
      "GET /v1/operations/op1": () => (++polls < 2
        ? { body: { operation_id: "op1", state: "running", progress: { done: 1, total: 2 } } }
        : { body: { operation_id: "op1", state: "succeeded", progress: { done: 2, total: 2 } } }),
    }, log));
    render(<MasterKeyWizard api={api} tenant="t1" pollMs={10} />);

    await user.click(screen.getByLabelText(/BYOK — AWS KMS/));
    await user.click(screen.getByRole("button", { name: "Next" }));
    const arn = screen.getByLabelText(/KMS key ARN/);
    await user.type(arn, "not-an-arn");
    await user.tab();
    expect(await screen.findByText(/Enter a KMS key ARN/)).toBeTruthy();
    expect(arn.getAttribute("aria-invalid")).toBe("true");
    await user.clear(arn);
    await user.type(arn, ARN);
    await user.type(screen.getByLabelText(/^Region/), "us-east-1");
    await user.click(screen.getByRole("button", { name: "Next" }));

    await user.click(screen.getByRole("button", { name: "Test connection" }));
    expect(await screen.findByText(/Some checks failed/)).toBeTruthy();
    expect(screen.getByText("kms:Encrypt")).toBeTruthy();
    expect(screen.getByText(/How to fix: Add kms:Encrypt/)).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Next" })).toBeNull(); // cannot go on after a failed test

    await user.click(screen.getByRole("button", { name: "Test connection" }));
    expect(await screen.findByText(/All checks passed/)).toBeTruthy();
    expect(log).toContain("PUT /v1/keystores/ks1"); // the second test updates the same keystore
    await user.click(screen.getByRole("button", { name: "Next" }));
    await user.click(screen.getByRole("button", { name: "Save" }));
    await user.click(await screen.findByRole("button", { name: "Activate" }));
    const result = await screen.findByTestId("activation-result", {}, { timeout: 2000 });
    expect(result.textContent).toMatch(/Active/);
    expect(result.textContent).toMatch(/2 of 2/);
  });

  it("shows the rollback and the API's message when activation fails", async () => {
    const user = userEvent.setup();
    const api = new CmkApi("http://api.test", fakeFetch({
      "POST /v1/tenants/t1/master-key": () => ({ status: 202, body: { operation_id: "op2", state: "rolled_back", progress: { done: 1, total: 3 }, message: "re-wrap of version 2 failed: key disabled" } }),
    }));
    render(<MasterKeyWizard api={api} tenant="t1" />);
    await user.click(screen.getByLabelText(/Platform-managed/));
    await user.click(screen.getByRole("button", { name: "Next" }));
    await user.click(screen.getByRole("button", { name: "Activate" }));
    expect(await screen.findByText(/rolled back: the previous master key is still in force/)).toBeTruthy();
    expect(screen.getByText(/key disabled/)).toBeTruthy();
  });

  it("shows the API's error (e.g. the MFA rule) verbatim", async () => {
    const user = userEvent.setup();
    const api = new CmkApi("http://api.test", fakeFetch({
      "POST /v1/tenants/t1/master-key": () => ({ status: 403, body: { error: "permission_denied", message: "needs a multi-factor login" } }),
    }));
    render(<MasterKeyWizard api={api} tenant="t1" />);
    await user.click(screen.getByLabelText(/Platform-managed/));
    await user.click(screen.getByRole("button", { name: "Next" }));
    await user.click(screen.getByRole("button", { name: "Activate" }));
    expect((await screen.findByRole("alert")).textContent).toMatch(/HTTP 403.*needs a multi-factor login/);
  });
});

describe("dashboard", () => {
  it("shows mode, state with reason, services and the chart", async () => {
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/tenants/t1/dashboard": () => ({ body: {
        tenant_id: "t1", status: "active", region: "eu-west-1",
        master_key: { mode: "byok", state: "Error", reason: "KMS key is disabled" },
        isolation: { status: "ok" }, services: [{ service_id: "mongodb-prod", last_seen: "2026-11-29T09:00:00Z" }],
        operations_per_day: [{ date: "2026-11-28", count: 5 }, { date: "2026-11-29", count: 9 }],
      } }),
    }));
    render(<Dashboard api={api} tenant="t1" />);
    expect((await screen.findByTestId("master-key-mode")).textContent).toMatch(/BYOK/);
    expect(screen.getByTestId("master-key-state").textContent).toBe("Error");
    expect(screen.getByText("KMS key is disabled")).toBeTruthy();
    expect(screen.getByText("2026-11-29 09:00:00 UTC")).toBeTruthy();
    expect(screen.getByRole("img", { name: /14 over 2 days/ })).toBeTruthy();
  });
});

describe("ops chart", () => {
  it("draws one bar per day scaled to the maximum", () => {
    const { container } = render(<OpsChart data={[{ date: "2026-11-01", count: 2 }, { date: "2026-11-02", count: 4 }]} />);
    const bars = container.querySelectorAll("rect");
    expect(bars.length).toBe(2);
    expect(Number(bars[1].getAttribute("height"))).toBeCloseTo(2 * Number(bars[0].getAttribute("height")));
  });
});

describe("audit log", () => {
  it("filters by kind and pages with the next token", async () => {
    const user = userEvent.setup();
    const log: string[] = [];
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/tenants/t1/audit": ({ query }) => ({ body: query.get("next_token")
        ? { items: [{ event_id: "e3", time: "2026-11-29T09:02:00Z", kind: "key_rotation" }] }
        : { items: [{ event_id: "e1", time: "2026-11-29T09:00:00Z", kind: "key_rotation" }], next_token: "p2" } }),
    }, log));
    render(<Audit api={api} tenant="t1" />);
    expect(await screen.findAllByTestId("audit-row")).toHaveLength(1);
    await user.type(screen.getByLabelText("Kind"), "key_rotation");
    await user.click(screen.getByRole("button", { name: "Apply filter" }));
    await waitFor(() => expect(log.some((l) => l.includes("kind=key_rotation"))).toBe(true));
    await user.click(await screen.findByRole("button", { name: "Next page" }));
    await waitFor(() => expect(log.some((l) => l.includes("next_token=p2"))).toBe(true));
    expect(await screen.findByText("2026-11-29 09:02:00 UTC")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Previous page" }).hasAttribute("disabled")).toBe(false);
  });
});

describe("services", () => {
  it("refuses a pasted private key before calling the API and issues from a CSR", async () => {
    const user = userEvent.setup();
    const log: string[] = [];
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/tenants/t1/certificates": () => ({ body: { items: [] } }),
      "GET /v1/tenants/t1/dashboard": () => ({ body: { tenant_id: "t1", status: "active", master_key: { mode: "platform-managed", state: "Active" }, services: [], operations_per_day: [], kmip_endpoint: "127.0.0.1:15696" } }),
      "POST /v1/tenants/t1/certificates": () => ({ status: 201, body: { serial: "0a1b", service_id: "mongodb-prod", spiffe_id: "spiffe://openkcm/tenant/t1/service/mongodb-prod" } }),
    }, log));
    render(<Services api={api} tenant="t1" />);
    await user.type(screen.getByLabelText("Service id"), "mongodb-prod");
    fireEvent.change(screen.getByLabelText(/Certificate signing request/), { target: { value: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----" } });
    await user.click(screen.getByRole("button", { name: "Issue certificate" }));
    expect(screen.getByText(/This is a private key/)).toBeTruthy();
    expect(log.some((l) => l.startsWith("POST"))).toBe(false);
    fireEvent.change(screen.getByLabelText(/Certificate signing request/), { target: { value: "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----" } });
    await user.click(screen.getByRole("button", { name: "Issue certificate" }));
    const status = await screen.findByText(/issued for/);
    expect(within(status).getByText("0a1b")).toBeTruthy();
    expect((await screen.findByTestId("kmip-endpoint")).textContent).toBe("127.0.0.1:15696");
    await act(async () => {});
  });

  it("gives MongoDB the kmip endpoint and TLS files", () => {
    const s = mongoSettings("kmip.example:5696");
    expect(s.node).toContain('kmsProviders: { kmip: { endpoint: "kmip.example:5696" } }');
    expect(s.node).toContain("tlsCertificateKeyFile");
    expect(s.python).toContain('kms_tls_options={"kmip"');
    expect(s.mongod).toContain("--kmipServerName kmip.example --kmipPort 5696");
  });
});
