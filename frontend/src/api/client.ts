/**
 * The only place the UI talks to the CMK API. Every call sends the bearer token; every non-2xx
 * reply becomes an ApiError carrying the API's own message, which the screens show as is.
 */
import { clearSession, getSession } from "../auth/session";
import type { paths } from "./schema";
import type {
  Account,
  AuditEvent,
  Certificate,
  CertificateIssueBody,
  ConnectionTest,
  Dashboard,
  Keystore,
  KeystoreCreateBody,
  KeystoreTestBody,
  KeystoreUpdateBody,
  L1LinkBody,
  ReturnToPlatformBody,
  RotateNowBody,
  RotationPolicyBody,
  CertificateRevokeBody,
  ImportParameters,
  AwsTrustTemplate,
  KeyImportCompleteBody,
  KeyImportStartBody,
  LinkResult,
  ManagedObject,
  Notification,
  Page,
  RotateResult,
  RotationPolicy,
  ServiceSeen,
  Tenant,
} from "./types";

/**
 * Fills a route template of the OpenAPI document. The template must be one of the document's paths,
 * so a route the API does not have is a compile error, not a 404 at run time.
 */
export function route<K extends keyof paths & string>(template: K, params: Record<string, string> = {}): string {
  return template.replace(/\{(\w+)\}/g, (_, name: string) => {
    const value = params[name];
    if (value === undefined) throw new Error(`missing path parameter ${name}`);
    return encodeURIComponent(value);
  });
}

function idempotencyKey(): string {
  const buf = new Uint8Array(16);
  crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
    readonly body?: unknown,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** Pulls a readable message out of the API's error body (several common shapes). */
export function errorMessage(status: number, body: unknown): { message: string; field?: string } {
  if (body && typeof body === "object") {
    const b = body as Record<string, unknown>;
    const inner = (b.error && typeof b.error === "object" ? b.error : b) as Record<string, unknown>;
    const message = inner.message ?? inner.detail ?? b.message ?? (typeof b.error === "string" ? b.error : undefined);
    const details = (b.details && typeof b.details === "object" ? b.details : {}) as Record<string, unknown>;
    const field = (inner.field ?? b.field ?? details.field) as string | undefined;
    if (typeof message === "string" && message) {
      return { message: field ? `${field}: ${message}` : message, field };
    }
  }
  if (typeof body === "string" && body.trim()) return { message: body.trim() };
  return { message: `The API answered ${status}.` };
}

export type Fetcher = typeof fetch;

export class CmkApi {
  constructor(
    readonly base: string,
    private readonly fetcher: Fetcher = (...args) => fetch(...args),
    private readonly onUnauthorized: () => void = () => {},
  ) {}

  async raw(method: string, path: string, body?: unknown, accept = "application/json", extra: Record<string, string> = {}): Promise<Response> {
    const headers: Record<string, string> = { Accept: accept, ...extra };
    const session = getSession();
    if (session) headers.Authorization = `Bearer ${session.accessToken}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let reply: Response;
    try {
      reply = await this.fetcher(`${this.base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "The CMK API is not reachable. Check your connection and try again.");
    }
    if (!reply.ok) {
      const text = await reply.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        /* keep text */
      }
      const { message, field } = errorMessage(reply.status, parsed);
      if (reply.status === 401) {
        clearSession();
        this.onUnauthorized();
      }
      throw new ApiError(reply.status, message, field, parsed);
    }
    return reply;
  }

  async call<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    const reply = await this.raw(method, path, body, "application/json", headers);
    if (reply.status === 204) return undefined as T;
    const text = await reply.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  private q(params: Record<string, string | number | undefined | null>): string {
    const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
    return entries.length ? `?${new URLSearchParams(entries.map(([k, v]) => [k, String(v)])).toString()}` : "";
  }

  // Accounts and tenants
  listAccounts() {
    return this.call<Page<Account>>("GET", route("/v1/accounts"));
  }
  listTenants(account: string, nextToken?: string) {
    return this.call<Page<Tenant>>("GET", route("/v1/accounts/{account_id}/tenants", { account_id: account }) + this.q({ next_token: nextToken, limit: 100 }));
  }
  tenant(tenant: string) {
    return this.call<Tenant>("GET", route("/v1/tenants/{tenant_id}", { tenant_id: tenant }));
  }
  dashboard(tenant: string) {
    return this.call<Dashboard>("GET", route("/v1/tenants/{tenant_id}/dashboard", { tenant_id: tenant }));
  }
  services(tenant: string) {
    return this.call<Page<ServiceSeen>>("GET", route("/v1/tenants/{tenant_id}/services", { tenant_id: tenant }));
  }
  notifications(account: string) {
    return this.call<Page<Notification>>("GET", route("/v1/accounts/{account_id}/notifications", { account_id: account }) + this.q({ limit: 20 }));
  }

  // Keystores (L1 connections) and L1 keys
  listKeystores(account: string) {
    return this.call<Page<Keystore>>("GET", route("/v1/accounts/{account_id}/keystores", { account_id: account }) + this.q({ limit: 100 }));
  }
  createKeystore(account: string, body: KeystoreCreateBody) {
    return this.call<Keystore>("POST", route("/v1/accounts/{account_id}/keystores", { account_id: account }), body, { "Idempotency-Key": idempotencyKey() });
  }
  updateKeystore(account: string, id: string, body: KeystoreUpdateBody) {
    return this.call<Keystore>("PATCH", route("/v1/accounts/{account_id}/keystores/{keystore_id}", { account_id: account, keystore_id: id }), body);
  }
  testKeystore(account: string, id: string, keyRef?: string) {
    return this.call<ConnectionTest>("POST", route("/v1/accounts/{account_id}/keystores/{keystore_id}/test", { account_id: account, keystore_id: id }), (keyRef ? { key_ref: keyRef } : {}) satisfies KeystoreTestBody);
  }
  keystoreKeys(account: string, id: string) {
    return this.call<Page<Record<string, unknown>>>("GET", route("/v1/accounts/{account_id}/keystores/{keystore_id}/keys", { account_id: account, keystore_id: id }) + this.q({ limit: 100 }));
  }
  /** Links an L1 key, assigns it to the tenants and activates it there (re-wrap of every L2 version). */
  linkL1Key(account: string, keystoreId: string, keyRef: string, tenantIds: string[]) {
    return this.call<LinkResult>("POST", route("/v1/accounts/{account_id}/keystores/{keystore_id}/link", { account_id: account, keystore_id: keystoreId }), { key_ref: keyRef, tenant_ids: tenantIds } satisfies L1LinkBody);
  }
  awsTrustTemplate(account: string, roleName: string, keyArn?: string) {
    return this.call<AwsTrustTemplate>("GET", route("/v1/accounts/{account_id}/trust-template/aws", { account_id: account }) + this.q({ role_name: roleName, key_arn: keyArn }));
  }
  /** BYOK with the customer's own material (DECISIONS 5), step 1: an EXTERNAL-origin key and its import parameters. */
  startKeyImport(account: string, keystoreId: string, description = "") {
    return this.call<ImportParameters>("POST", route("/v1/accounts/{account_id}/keystores/{keystore_id}/import", { account_id: account, keystore_id: keystoreId }), { description } satisfies KeyImportStartBody);
  }
  /** Step 2: forward the material the customer wrapped on their side (base64); OpenKCM never sees it in clear. */
  completeKeyImport(account: string, keystoreId: string, body: KeyImportCompleteBody) {
    return this.call<Record<string, unknown>>("POST", route("/v1/accounts/{account_id}/keystores/{keystore_id}/import/complete", { account_id: account, keystore_id: keystoreId }), body);
  }
  returnToPlatform(tenant: string) {
    return this.call<{ tenant_id: string; result: unknown; progress: unknown[] }>("POST", route("/v1/tenants/{tenant_id}/return-to-platform", { tenant_id: tenant }), { confirm: true } satisfies ReturnToPlatformBody);
  }

  // Rotation and objects
  rotationPolicy(tenant: string) {
    return this.call<RotationPolicy>("GET", route("/v1/tenants/{tenant_id}/rotation-policy", { tenant_id: tenant }));
  }
  setRotationPolicy(tenant: string, days: number) {
    return this.call<RotationPolicy>("PUT", route("/v1/tenants/{tenant_id}/rotation-policy", { tenant_id: tenant }), { rotation_period_days: days } satisfies RotationPolicyBody);
  }
  rotate(tenant: string) {
    return this.call<RotateResult>("POST", route("/v1/tenants/{tenant_id}/rotate", { tenant_id: tenant }), {} satisfies RotateNowBody);
  }
  objects(tenant: string, nextToken?: string) {
    return this.call<Page<ManagedObject>>("GET", route("/v1/tenants/{tenant_id}/keys", { tenant_id: tenant }) + this.q({ next_token: nextToken, limit: 25 }));
  }

  // Certificates
  certificates(tenant: string) {
    return this.call<Page<Certificate>>("GET", route("/v1/tenants/{tenant_id}/certificates", { tenant_id: tenant }) + this.q({ limit: 100 }));
  }
  issueCertificate(tenant: string, body: CertificateIssueBody) {
    return this.call<Certificate>("POST", route("/v1/tenants/{tenant_id}/certificates", { tenant_id: tenant }), body, { "Idempotency-Key": idempotencyKey() });
  }
  revokeCertificate(tenant: string, serial: string, reason = "") {
    return this.call<Certificate>("POST", route("/v1/tenants/{tenant_id}/certificates/{serial}/revoke", { tenant_id: tenant, serial }), { reason } satisfies CertificateRevokeBody);
  }
  caBundle() {
    return this.call<{ trust_domain: string; ca_pem: string }>("GET", route("/v1/ca"));
  }

  // Audit
  audit(
    tenant: string,
    filter: { since?: string; until?: string; kind?: string; nextToken?: string; limit?: number; order?: "oldest" | "newest" },
  ) {
    return this.call<Page<AuditEvent>>(
      "GET",
      route("/v1/tenants/{tenant_id}/audit", { tenant_id: tenant }) +
        this.q({
          since: filter.since,
          until: filter.until,
          kind: filter.kind,
          next_token: filter.nextToken,
          limit: filter.limit,
          order: filter.order,
        }),
    );
  }
  async auditExport(tenant: string, filter: { since?: string; until?: string; kind?: string }): Promise<string> {
    const path = route("/v1/tenants/{tenant_id}/audit/export", { tenant_id: tenant }) + this.q({ since: filter.since, until: filter.until, kind: filter.kind });
    return (await this.raw("GET", path, undefined, "application/x-ndjson")).text();
  }
}
