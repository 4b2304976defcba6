/**
 * Resource shapes of the CMK API (openkcm/api) as the UI uses them.
 *
 * They follow the OpenAPI document saved in src/api/openapi.json; `npm run api:types` regenerates
 * schema.d.ts from it. Powertools documents request bodies precisely but answers as free-form
 * objects, so the answer shapes the screens rely on are written out here, in one place, from the
 * route modules; a change of the API touches this file and client.ts only.
 */
import type { components } from "./schema";

type Schemas = components["schemas"];
export type KeystoreCreateBody = Schemas["KeystoreCreate"];
export type CertificateIssueBody = Schemas["CertificateIssue"];
export type L1LinkBody = Schemas["L1Link"];
export type KeystoreUpdateBody = Schemas["KeystoreUpdate"];
export type KeystoreTestBody = Schemas["KeystoreTest"];
export type RotateNowBody = Schemas["RotateNow"];
export type RotationPolicyBody = Schemas["RotationPolicy"];
export type CertificateRevokeBody = Schemas["CertificateRevoke"];
export type ReturnToPlatformBody = Schemas["ReturnToPlatform"];
export type KeyImportStartBody = Schemas["KeyImportStart"];
export type KeyImportCompleteBody = Schemas["KeyImportComplete"];

/** Import parameters of an EXTERNAL-origin AWS KMS key: public by design (a public key and a token). */
export interface ImportParameters {
  key_ref: string;
  key_id?: string;
  wrapping_algorithm: string;
  wrapping_key_spec: string;
  public_key: string;
  import_token: string;
  parameters_valid_to?: string;
}

export type MasterKeyMode = "platform-managed" | "byok" | "hyok";
export type KeystoreProvider = KeystoreCreateBody["provider"];

export interface Page<T> {
  items: T[];
  next_token?: string | null;
}

export interface Account {
  account_id: string;
  name?: string;
  status?: string;
}

export interface Tenant {
  tenant_id: string;
  account_id: string;
  name?: string;
  region?: string;
  status: string;
  status_reason?: string | null;
  key_mode: MasterKeyMode | string;
  l1_state: string;
  l1_reason?: string | null;
  l1_key_ref?: string | null;
  current_l2_version: number;
  rotation_period_days: number;
  created_at?: string | null;
}

export interface L2Version {
  version: number;
  state: string;
  parent?: string;
  current?: boolean;
  created_at?: string | null;
  retired_at?: string | null;
  destroyed_at?: string | null;
}

export interface ServiceSeen {
  service_id: string;
  last_seen?: string | null;
  operations?: number;
  certificates?: number;
  active_certificates?: number;
}

export interface DailyCount {
  day: string;
  count: number;
}

export interface Dashboard {
  tenant: Tenant;
  status: string;
  region?: string;
  key_mode: string;
  master_key: { mode: string; state: string; reason?: string | null };
  l2_versions: L2Version[];
  services: ServiceSeen[];
  operations_per_day: DailyCount[];
  kmip_endpoint?: string;
}

export interface Keystore {
  keystore_id: string;
  account_id?: string;
  provider: KeystoreProvider;
  name?: string;
  config: Record<string, unknown>;
  status?: string;
  status_reason?: string | null;
}

export interface ConnectionCheck {
  name: string;
  ok: boolean;
  message?: string;
  detail?: string;
  fix?: string | null;
  action?: string;
  missing_permissions?: string[];
  [extra: string]: unknown;
}

export interface ConnectionTest {
  keystore_id?: string;
  ok: boolean;
  checks: ConnectionCheck[];
}

export interface LinkResult {
  keystore_id: string;
  result: unknown;
  progress: unknown[];
}

export interface RotateResult {
  tenant_id: string;
  current_l2_version: number;
}

export interface RotationPolicy {
  tenant_id: string;
  rotation_period_days: number;
}

export interface ManagedObject {
  object_id: string;
  object_type?: string;
  state: string;
  algorithm?: string | number | null;
  length?: number | null;
  names?: string[];
  created_by?: string | null;
  created_at?: string | null;
  last_used_at?: string | null;
  l2_version?: number;
}

export interface Certificate {
  serial: string;
  service_id: string;
  subject?: string;
  issued_at?: string | null;
  not_after?: string | null;
  revoked_at?: string | null;
  status: "active" | "revoked" | string;
  spiffe_id?: string;
  certificate_pem?: string;
  ca_pem?: string;
}

export interface AuditEvent {
  event_id: string;
  time: string;
  kind: string;
  operation: string;
  result?: string;
  source?: string;
  actor?: string;
  actor_role?: string;
  object_id?: string;
  reason?: string;
  l2_version?: number;
  details?: Record<string, string>;
}

export interface Notification {
  tenant_id: string;
  kind: string;
  subject: string;
  message: string;
  link?: string;
  time: string;
}

export const AUDIT_KINDS = ["operation", "security", "config", "lifecycle"] as const;

/** The ready-made AWS trust template (seed 002 REQ-017): what the customer pastes into their account. */
export interface AwsTrustTemplate {
  openkcm_principal: string;
  /** Every OpenKCM role that reaches the customer's key (CMK API, rotation, KMIP); older APIs omit it. */
  openkcm_principals?: string[];
  role_name: string;
  role_trust_policy: unknown;
  key_policy_statement: unknown;
  role_permissions?: unknown;
  keystore_config?: Record<string, string>;
  /** The sts:ExternalId OpenKCM presents for this account (set by OpenKCM, named in the trust policy). */
  external_id?: string;
}
