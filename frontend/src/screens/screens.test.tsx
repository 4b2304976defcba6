import { fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { CmkApi } from "../api/client";
import type { Tenant } from "../api/types";
import { fillDays, OpsChart } from "../components/OpsChart";
import { fakeFetch } from "../test/fakeServer";
import { Audit } from "./Audit";
import { Dashboard } from "./Dashboard";
import { groupByL1, Keys, splitL1Ref } from "./Keys";
import { describeStep, MasterKeyWizard, missingPermissions, tenantFailure } from "./MasterKeyWizard";
import { mongoSettings, Services } from "./Services";

const ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

function tenant(id: string, over: Partial<Tenant> = {}): Tenant {
  return { tenant_id: id, account_id: "acme", status: "Ready", key_mode: "platform-managed", l1_state: "Active", current_l2_version: 1, rotation_period_days: 90, ...over };
}

describe("master key wizard", () => {
  it("validates inline, lists failed checks with the missing permission, then saves and activates to Active", async () => {
    const user = userEvent.setup();
    let tests = 0;
    let linked = false;
    const log: string[] = [];
    const api = new CmkApi("http://api.test", fakeFetch({
      "POST /v1/accounts/acme/keystores": ({ body }) => ({ status: 201, body: { keystore_id: "ks1", provider: "aws-kms", config: (body as { config: object }).config } }),
      "PATCH /v1/accounts/acme/keystores/ks1": () => ({ body: { keystore_id: "ks1", provider: "aws-kms", config: {} } }),
      "POST /v1/accounts/acme/keystores/ks1/test": () => (++tests === 1
        ? { body: { ok: false, checks: [
            { name: "connect", ok: true, message: "AWS KMS in us-east-1 answered" },
            { name: "permission", ok: false, message: `permission kms:DescribeKey missing on ${ARN}`, fix: "Add a statement to the key policy that allows kms:DescribeKey." },
          ] } }
        : { body: { ok: true, checks: [{ name: "connect", ok: true }, { name: "permission", ok: true }, { name: "wrap", ok: true }] } }),
      "POST /v1/accounts/acme/keystores/ks1/link": ({ body }) => {
        linked = (body as { tenant_ids: string[] }).tenant_ids[0] === "t1";
        return { body: { keystore_id: "ks1", result: {}, progress: [{ tenant_id: "t1", step: "re-wrapped L2", done: 1, total: 1 }, "switched"] } };
      },
      "GET /v1/tenants/t1": () => ({ body: tenant("t1", { key_mode: linked ? "byok" : "platform-managed", l1_state: "Active", l1_key_ref: ARN }) }),
    }, log));
    render(<MasterKeyWizard api={api} account="acme" tenant="t1" mfa={false} />);

    await user.click(screen.getByLabelText(/BYOK — AWS KMS/));
    await user.click(screen.getByRole("button", { name: "Next" }));
    const arn = screen.getByLabelText(/KMS key ARN/);
    await user.type(arn, "not an arn");
    await user.tab();
    expect(await screen.findByText(/Enter a KMS key ARN/)).toBeTruthy();
    expect(arn.getAttribute("aria-invalid")).toBe("true");
    await user.clear(arn);
    await user.type(arn, ARN);
    await user.type(screen.getByLabelText(/^Region/), "us-east-1");
    await user.click(screen.getByRole("button", { name: "Next" }));

    await user.click(screen.getByRole("button", { name: "Test connection" }));
    expect(await screen.findByText(/Some checks failed/)).toBeTruthy();
    expect(screen.getByText("kms:DescribeKey", { selector: "code" })).toBeTruthy();
    expect(screen.getByText(/How to fix: Add a statement/)).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Next" })).toBeNull(); // cannot go on after a failed test

    await user.click(screen.getByRole("button", { name: "Test again" }));
    expect(await screen.findByText(/All checks passed/)).toBeTruthy();
    expect(log.filter((l) => l.startsWith("POST /v1/accounts/acme/keystores")).length).toBe(3); // created once, tested twice
    expect(log).toContain("PATCH /v1/accounts/acme/keystores/ks1");
    await user.click(screen.getByRole("button", { name: "Next" }));
    await user.click(screen.getByRole("button", { name: "Save & activate" }));
    const result = await screen.findByTestId("activation-result");
    expect(result.textContent).toMatch(/byok — Active/);
    expect(screen.getByText("t1: re-wrapped L2 (1/1)")).toBeTruthy();
  });

  it("shows the API's error, the fix and the rolled-back state when activation fails", async () => {
    const user = userEvent.setup();
    const api = new CmkApi("http://api.test", fakeFetch({
      "POST /v1/tenants/t1/return-to-platform": () => ({ status: 422, body: { error: "keystore_permission_missing", message: "permission kms:Decrypt missing", details: { fix: "Allow kms:Decrypt." } } }),
      "GET /v1/tenants/t1": () => ({ body: tenant("t1", { key_mode: "byok", l1_state: "Active" }) }),
    }));
    render(<MasterKeyWizard api={api} account="acme" tenant="t1" mfa={false} />);
    await user.click(screen.getByLabelText(/Platform-managed/));
    await user.click(screen.getByRole("button", { name: "Next" }));
    await user.click(screen.getByRole("button", { name: "Switch to platform-managed" }));
    expect(await screen.findByText(/rolled back: tenant t1 still uses byok \(Active\)/)).toBeTruthy();
    expect(screen.getByText(/HTTP 422/).parentElement!.textContent).toMatch(/permission kms:Decrypt missing/);
    expect(screen.getByText("How to fix: Allow kms:Decrypt.")).toBeTruthy();
  });

  it("warns before a HYOK change without MFA", async () => {
    const user = userEvent.setup();
    render(<MasterKeyWizard api={new CmkApi("http://api.test", fakeFetch({}))} account="acme" tenant="t1" mfa={false} />);
    await user.click(screen.getByLabelText(/HYOK — PKCS#11/));
    expect(screen.getByRole("alert").textContent).toMatch(/refuses HYOK changes without MFA/);
  });

  it("forgets typed secrets once the keystore is saved and on Start again; keeps the other fields", async () => {
    const user = userEvent.setup();
    const bodies: Record<string, unknown>[] = [];
    const api = new CmkApi("http://api.test", fakeFetch({
      "POST /v1/accounts/acme/keystores": ({ body }) => { bodies.push(body as Record<string, unknown>); return { status: 201, body: { keystore_id: "ks1", provider: "azure-key-vault", config: {} } }; },
      "PATCH /v1/accounts/acme/keystores/ks1": ({ body }) => { bodies.push(body as Record<string, unknown>); return { body: { keystore_id: "ks1", provider: "azure-key-vault", config: {} } }; },
      "POST /v1/accounts/acme/keystores/ks1/test": () => ({ body: { ok: true, checks: [{ name: "connect", ok: true }] } }),
      "POST /v1/accounts/acme/keystores/ks1/link": () => ({ body: { keystore_id: "ks1", result: {}, progress: ["switched"] } }),
      "GET /v1/tenants/t1": () => ({ body: tenant("t1", { key_mode: "byok" }) }),
    }));
    render(<MasterKeyWizard api={api} account="acme" tenant="t1" mfa={false} />);
    await user.click(screen.getByLabelText(/BYOK — Azure Key Vault/));
    await user.click(screen.getByRole("button", { name: "Next" }));
    await user.type(screen.getByLabelText(/^Vault URL/), "https://my-vault.vault.azure.net");
    await user.type(screen.getByLabelText(/^Key name/), "tenant-master");
    await user.type(screen.getByLabelText(/^Directory \(tenant\) ID/), "11111111-2222-3333-4444-555555555555");
    await user.type(screen.getByLabelText(/^Application \(client\) ID/), "66666666-7777-8888-9999-000000000000");
    const secret = screen.getByLabelText(/^Client secret/);
    expect(secret.getAttribute("type")).toBe("password");
    expect(secret.getAttribute("autocomplete")).toBe("new-password");
    await user.type(secret, "s3cr3t-value");
    await user.click(screen.getByRole("button", { name: "Next" }));
    await user.click(screen.getByRole("button", { name: "Test connection" }));
    expect(await screen.findByText(/All checks passed/)).toBeTruthy();
    expect(bodies[0].secrets).toEqual({ client_secret: "s3cr3t-value" });

    await user.click(screen.getByRole("button", { name: "Back" }));
    expect((screen.getByLabelText(/^Client secret/) as HTMLInputElement).value).toBe(""); // gone right after the save
    expect((screen.getByLabelText(/^Vault URL/) as HTMLInputElement).value).toBe("https://my-vault.vault.azure.net");
    await user.click(screen.getByRole("button", { name: "Next" })); // the saved keystore keeps its secret
    await user.click(screen.getByRole("button", { name: "Test again" }));
    await waitFor(() => expect(bodies.length).toBe(2));
    expect(bodies[1]).not.toHaveProperty("secrets");
    await user.click(await screen.findByRole("button", { name: "Next" }));
    await user.click(screen.getByRole("button", { name: "Save & activate" }));
    await screen.findByTestId("activation-result");

    await user.click(screen.getByRole("button", { name: "Start again" }));
    await user.click(screen.getByRole("button", { name: "Next" }));
    expect((screen.getByLabelText(/^Client secret/) as HTMLInputElement).value).toBe("");
    expect((screen.getByLabelText(/^Key name/) as HTMLInputElement).value).toBe("tenant-master");
    expect(document.body.textContent).not.toContain("s3cr3t-value");
  });

  it("masks the pasted service-account key until Show is pressed, and asks no autofill for it", async () => {
    const user = userEvent.setup();
    render(<MasterKeyWizard api={new CmkApi("http://api.test", fakeFetch({}))} account="acme" tenant="t1" mfa={false} />);
    await user.click(screen.getByLabelText(/BYOK — Google Cloud KMS/));
    await user.click(screen.getByRole("button", { name: "Next" }));
    const json = screen.getByLabelText(/^Service account key/) as HTMLTextAreaElement;
    expect(json.tagName).toBe("TEXTAREA");
    expect(json.getAttribute("autocomplete")).toBe("new-password");
    expect(json.classList.contains("masked")).toBe(true);
    json.focus();
    await user.paste('{"type":"service_account"}');
    expect(json.value).toBe('{"type":"service_account"}');
    await user.click(screen.getByRole("button", { name: "Show" }));
    expect(json.classList.contains("masked")).toBe(false);
    await user.click(screen.getByRole("button", { name: "Hide" }));
    expect(json.classList.contains("masked")).toBe(true);
    expect(screen.getByLabelText(/^Key ring/).getAttribute("autocomplete")).toBe("off");
  });

  it("says an AWS KMS keystore needs a role (the API lends no identity of its own)", async () => {
    const user = userEvent.setup();
    render(<MasterKeyWizard api={new CmkApi("http://api.test", fakeFetch({}))} account="acme" tenant="t1" mfa={false} />);
    await user.click(screen.getByLabelText(/BYOK — AWS KMS/));
    await user.click(screen.getByRole("button", { name: "Next" }));
    const help = document.getElementById("f-role_arn-help")!.textContent!;
    expect(help).not.toMatch(/leave empty/i);
    expect(help).toMatch(/refuses an AWS KMS keystore without a role/);
  });

  it("reads missing permissions and per-tenant failures from the API's answers", () => {
    expect(missingPermissions({ name: "permission", ok: false, message: `permission kms:DescribeKey missing on ${ARN}` })).toEqual(["kms:DescribeKey"]);
    expect(missingPermissions({ name: "permission", ok: true, message: "permission kms:DescribeKey missing" })).toEqual([]);
    expect(tenantFailure([{ tenant_id: "t1", ok: true }], "t1")).toBeUndefined();
    expect(tenantFailure([{ tenant_id: "t1", ok: false, error: "re-wrap failed: key disabled" }], "t1")).toBe("re-wrap failed: key disabled");
    expect(tenantFailure([{ tenant_id: "t1", ok: false, error: { error: "keystore_key_disabled", message: "KMS key k is Disabled", details: { fix: "Enable the key." } } }], "t1"))
      .toBe("KMS key k is Disabled How to fix: Enable the key.");
  });

  it("describes progress reports of any shape", () => {
    expect(describeStep("switched")).toBe("switched");
    expect(describeStep({ message: "re-wrapping", done: 2, total: 5 })).toBe("re-wrapping (2/5)");
    expect(describeStep({ args: ["rewrap", "3"] })).toBe("rewrap 3");
  });
});

describe("dashboard", () => {
  it("shows mode, state with reason, isolation, services and the chart", async () => {
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/tenants/t1/dashboard": () => ({ body: {
        tenant: tenant("t1", { region: "eu-west-1" }), status: "Ready", region: "eu-west-1", key_mode: "byok",
        master_key: { mode: "byok", state: "Error", reason: "KMS key is disabled" },
        l2_versions: [{ version: 1, state: "Active", current: true }],
        services: [{ service_id: "mongodb-prod", last_seen: "2026-11-29T09:00:00+00:00", operations: 14 }],
        operations_per_day: [{ day: "2026-11-28", count: 5 }, { day: "2026-11-29", count: 9 }],
      } }),
    }));
    render(<Dashboard api={api} tenant="t1" />);
    expect((await screen.findByTestId("master-key-mode")).textContent).toMatch(/BYOK/);
    expect(screen.getByTestId("master-key-state").textContent).toBe("Error");
    expect(screen.getByText("KMS key is disabled")).toBeTruthy();
    expect(screen.getByText("Enforced")).toBeTruthy();
    expect(screen.getByText("Connected")).toBeTruthy();
    expect(screen.getByText("2026-11-29 09:00:00 UTC")).toBeTruthy();
    expect(screen.getByRole("img", { name: /14 over 14 days/ })).toBeTruthy();
  });
});

describe("keys", () => {
  it("splits the stored parent reference", () => {
    expect(splitL1Ref(`l1:ks-1/${ARN}`)).toEqual({ keystore: "ks-1", keyRef: ARN });
    expect(splitL1Ref("alias/x")).toEqual({ keyRef: "alias/x" });
  });

  it("groups tenants by master key", () => {
    const groups = groupByL1([tenant("a", { key_mode: "byok", l1_key_ref: ARN }), tenant("b", { key_mode: "byok", l1_key_ref: ARN }), tenant("c")]);
    expect(groups.map((g) => [g.key, g.tenants.map((t) => t.tenant_id)])).toEqual([[ARN, ["a", "b"]], ["platform root key", ["c"]]]);
  });

  it("assigns a key to a second tenant and rotates", async () => {
    const user = userEvent.setup();
    let version = 1;
    let sent: unknown;
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/accounts/acme/keystores": () => ({ body: { items: [{ keystore_id: "ks1", provider: "aws-kms", name: "prod kms", config: {} }] } }),
      "POST /v1/accounts/acme/keystores/ks1/link": ({ body }) => { sent = body; return { body: { keystore_id: "ks1", result: {}, progress: ["t2: re-wrapped 1 version"] } }; },
      "GET /v1/tenants/t1/dashboard": () => ({ body: { tenant: tenant("t1"), status: "Ready", key_mode: "byok", master_key: { mode: "byok", state: "Active" },
        l2_versions: Array.from({ length: version }, (_, i) => ({ version: i + 1, state: i + 1 === version ? "Active" : "Retired", current: i + 1 === version, created_at: "2026-11-29T09:00:00+00:00" })),
        services: [], operations_per_day: [] } }),
      "GET /v1/tenants/t1/rotation-policy": () => ({ body: { tenant_id: "t1", rotation_period_days: 90 } }),
      "POST /v1/tenants/t1/rotate": () => ({ body: { tenant_id: "t1", current_l2_version: ++version } }),
      "GET /v1/tenants/t1/keys": () => ({ body: { items: [{ object_id: "o1", object_type: "SymmetricKey", state: "Active", algorithm: "AES", length: 256, names: ["dek"], created_by: "mongodb-prod" }], next_token: null } }),
    }));
    const tenants = [tenant("t1", { key_mode: "byok", l1_key_ref: ARN }), tenant("t2")];
    render(<Keys api={api} account="acme" tenant="t1" tenants={tenants} onChanged={() => {}} />);
    await user.selectOptions(await screen.findByLabelText("Keystore"), "ks1");
    await user.type(screen.getByLabelText("Key reference"), ARN);
    await user.selectOptions(screen.getByLabelText("Tenant"), "t2");
    await user.click(screen.getByRole("button", { name: "Assign & activate" }));
    expect(await screen.findByText("t2: re-wrapped 1 version")).toBeTruthy();
    expect(sent).toEqual({ key_ref: ARN, tenant_ids: ["t2"] });

    expect(await screen.findAllByTestId("l2-version")).toHaveLength(1);
    await user.click(screen.getByRole("button", { name: "Rotate now" }));
    expect(await screen.findByText("Rotated: version 2 is now current.")).toBeTruthy();
    await waitFor(() => expect(screen.getAllByTestId("l2-version")).toHaveLength(2));
    expect(screen.getByText("dek")).toBeTruthy();
    expect(screen.getByTestId("rotation-policy").textContent).toMatch(/90/);
  });
});

describe("ops chart", () => {
  it("draws one bar per day of the last two weeks, scaled to the maximum", () => {
    const { container } = render(<OpsChart data={[{ day: "2026-11-01", count: 2 }, { day: "2026-11-03", count: 4 }]} />);
    const bars = container.querySelectorAll("rect");
    expect(bars.length).toBe(14);
    expect(Number(bars[13].getAttribute("height"))).toBeCloseTo(2 * Number(bars[11].getAttribute("height")));
    expect(Number(bars[12].getAttribute("height"))).toBe(0);
    expect(fillDays([{ day: "2026-10-01", count: 1 }, { day: "2026-11-01", count: 1 }]).length).toBe(32);
  });
});

describe("audit log", () => {
  it("filters by kind and pages with the next token", async () => {
    const user = userEvent.setup();
    const log: string[] = [];
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/tenants/t1/audit": ({ query }) => ({ body: query.get("next_token")
        ? { items: [{ event_id: "e3", time: "2026-11-29T09:02:00+00:00", kind: "lifecycle", operation: "RotateL2", result: "success", l2_version: 2 }] }
        : { items: [{ event_id: "e1", time: "2026-11-29T09:00:00+00:00", kind: "lifecycle", operation: "CreateTenant", result: "success" }], next_token: "p2" } }),
    }, log));
    render(<Audit api={api} tenant="t1" />);
    expect(await screen.findAllByTestId("audit-row")).toHaveLength(1);
    await user.selectOptions(screen.getByLabelText("Kind"), "lifecycle");
    await user.click(screen.getByRole("button", { name: "Apply filter" }));
    await waitFor(() => expect(log.some((l) => l.includes("kind=lifecycle"))).toBe(true));
    await user.click(await screen.findByRole("button", { name: "Next page" }));
    await waitFor(() => expect(log.some((l) => l.includes("next_token=p2"))).toBe(true));
    expect(await screen.findByText("RotateL2")).toBeTruthy();
    expect(screen.getByText("L2 v2")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Previous page" }).hasAttribute("disabled")).toBe(false);
  });

  it("asks for the newest events first, and the oldest when chosen", async () => {
    const user = userEvent.setup();
    const log: string[] = [];
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/tenants/t1/audit": () => ({ body: { items: [] } }),
    }, log));
    render(<Audit api={api} tenant="t1" />);
    await waitFor(() => expect(log.some((l) => l.includes("order=newest"))).toBe(true));
    await user.selectOptions(screen.getByLabelText("Order"), "oldest");
    await user.click(screen.getByRole("button", { name: "Apply filter" }));
    await waitFor(() => expect(log.some((l) => l.includes("order=oldest"))).toBe(true));
  });
});

describe("services", () => {
  it("refuses a pasted private key before calling the API and issues from a CSR", async () => {
    const user = userEvent.setup();
    const log: string[] = [];
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/tenants/t1/certificates": () => ({ body: { items: [] } }),
      "GET /v1/tenants/t1/dashboard": () => ({ body: { tenant: tenant("t1"), status: "Ready", key_mode: "platform-managed", master_key: { mode: "platform-managed", state: "Active" }, l2_versions: [], services: [], operations_per_day: [] } }),
      "POST /v1/tenants/t1/certificates": () => ({ status: 201, body: { serial: "0a1b", service_id: "mongodb-prod", status: "active", spiffe_id: "spiffe://openkcm/tenant/t1/service/mongodb-prod" } }),
    }, log));
    render(<Services api={api} tenant="t1" kmipEndpoint="127.0.0.1:15696" />);
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
  });

  it("gives MongoDB the kmip endpoint and TLS files", () => {
    const s = mongoSettings("kmip.example:5696");
    expect(s.node).toContain('kmsProviders: { kmip: { endpoint: "kmip.example:5696" } }');
    expect(s.node).toContain("tlsCertificateKeyFile");
    expect(s.python).toContain('kms_tls_options={"kmip"');
    expect(s.mongod).toContain("--kmipServerName kmip.example --kmipPort 5696");
  });
});
