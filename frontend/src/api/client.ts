/**
 * The only place the UI talks to the CMK API. Every call sends the bearer token; every non-2xx
 * reply becomes an ApiError carrying the API's own message, which the screens show as is.
 */
import { clearSession, getSession } from "../auth/session";
import type {
  AuditEvent,
  Certificate,
  ConnectionTest,
  Dashboard,
  Keystore,
  KeystoreType,
  L1Key,
  L2Version,
  ManagedObject,
  MasterKeyMode,
  Notification,
  Operation,
  Page,
  RotationPolicy,
  Tenant,
} from "./types";

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

  async raw(method: string, path: string, body?: unknown, accept = "application/json"): Promise<Response> {
    const headers: Record<string, string> = { Accept: accept };
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

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const reply = await this.raw(method, path, body);
    if (reply.status === 204) return undefined as T;
    const text = await reply.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  private q(params: Record<string, string | number | undefined | null>): string {
    const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
    return entries.length ? `?${new URLSearchParams(entries.map(([k, v]) => [k, String(v)])).toString()}` : "";
  }

  private t(tenant: string): string {
    return `/v1/tenants/${encodeURIComponent(tenant)}`;
  }

  // Tenants and dashboard
  listTenants(nextToken?: string) {
    return this.call<Page<Tenant>>("GET", `/v1/tenants${this.q({ next_token: nextToken })}`);
  }
  dashboard(tenant: string) {
    return this.call<Dashboard>("GET", `${this.t(tenant)}/dashboard`);
  }
  notifications() {
    return this.call<Page<Notification>>("GET", `/v1/notifications`);
  }

  // Keystores and L1
  listKeystores() {
    return this.call<Page<Keystore>>("GET", `/v1/keystores`);
  }
  createKeystore(type: KeystoreType, name: string, config: Record<string, unknown>) {
    return this.call<Keystore>("POST", `/v1/keystores`, { type, name, config });
  }
  updateKeystore(id: string, name: string, config: Record<string, unknown>) {
    return this.call<Keystore>("PUT", `/v1/keystores/${encodeURIComponent(id)}`, { name, config });
  }
  testKeystore(id: string, keyRef?: string) {
    return this.call<ConnectionTest>("POST", `/v1/keystores/${encodeURIComponent(id)}/test`, keyRef ? { key_ref: keyRef } : {});
  }
  listL1Keys() {
    return this.call<Page<L1Key>>("GET", `/v1/l1-keys`);
  }
  linkL1Key(keystoreId: string, keyRef: string) {
    return this.call<L1Key>("POST", `/v1/l1-keys`, { keystore_id: keystoreId, key_ref: keyRef });
  }
  assignL1Key(l1: string, tenant: string) {
    return this.call<L1Key>("POST", `/v1/l1-keys/${encodeURIComponent(l1)}/assignments`, { tenant_id: tenant });
  }
  unassignL1Key(l1: string, tenant: string) {
    return this.call<L1Key>("DELETE", `/v1/l1-keys/${encodeURIComponent(l1)}/assignments/${encodeURIComponent(tenant)}`);
  }
  activateMasterKey(tenant: string, mode: MasterKeyMode, l1Id?: string) {
    return this.call<Operation>("POST", `${this.t(tenant)}/master-key`, { mode, l1_id: l1Id });
  }
  operation(id: string) {
    return this.call<Operation>("GET", `/v1/operations/${encodeURIComponent(id)}`);
  }

  // L2, rotation, objects
  l2Versions(tenant: string) {
    return this.call<Page<L2Version>>("GET", `${this.t(tenant)}/l2-versions`);
  }
  rotationPolicy(tenant: string) {
    return this.call<RotationPolicy>("GET", `${this.t(tenant)}/rotation-policy`);
  }
  setRotationPolicy(tenant: string, periodDays: number) {
    return this.call<RotationPolicy>("PUT", `${this.t(tenant)}/rotation-policy`, { period_days: periodDays });
  }
  rotate(tenant: string) {
    return this.call<L2Version | Operation>("POST", `${this.t(tenant)}/rotate`, {});
  }
  objects(tenant: string, nextToken?: string) {
    return this.call<Page<ManagedObject>>("GET", `${this.t(tenant)}/objects${this.q({ next_token: nextToken })}`);
  }

  // Services and certificates
  certificates(tenant: string) {
    return this.call<Page<Certificate>>("GET", `${this.t(tenant)}/certificates`);
  }
  issueCertificate(tenant: string, serviceId: string, csrPem: string) {
    return this.call<Certificate>("POST", `${this.t(tenant)}/certificates`, { service_id: serviceId, csr_pem: csrPem });
  }
  revokeCertificate(tenant: string, serial: string) {
    return this.call<Certificate>("POST", `${this.t(tenant)}/certificates/${encodeURIComponent(serial)}/revoke`, {});
  }
  async caBundle(): Promise<string> {
    return (await this.raw("GET", `/v1/ca`, undefined, "application/x-pem-file, application/json")).text();
  }

  // Audit
  audit(tenant: string, filter: { from?: string; to?: string; kind?: string; nextToken?: string; limit?: number }) {
    return this.call<Page<AuditEvent>>(
      "GET",
      `${this.t(tenant)}/audit${this.q({ from: filter.from, to: filter.to, kind: filter.kind, next_token: filter.nextToken, limit: filter.limit })}`,
    );
  }
  async auditExport(tenant: string, filter: { from?: string; to?: string; kind?: string }): Promise<string> {
    const path = `${this.t(tenant)}/audit/export${this.q({ from: filter.from, to: filter.to, kind: filter.kind })}`;
    return (await this.raw("GET", path, undefined, "application/x-ndjson, application/json")).text();
  }
}
