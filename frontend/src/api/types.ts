/**
 * Resource shapes of the CMK API as the UI uses them.
 *
 * These follow the OpenAPI document saved in src/api/openapi.json (types generated into schema.d.ts
 * by `npm run api:types`). Where the UI needs a narrower or friendlier view, it is defined here and
 * kept in one place so a change of the API touches this file and client.ts only.
 */

export type MasterKeyMode = "platform-managed" | "byok" | "hyok";
export type MasterKeyState = "Inactive" | "Active" | "Error" | string;
export type KeystoreType = "aws-kms" | "azure-key-vault" | "gcp-kms" | "pkcs11";

export interface Page<T> {
  items: T[];
  next_token?: string | null;
}

export interface Tenant {
  tenant_id: string;
  account: string;
  name?: string;
  status: string;
  region?: string;
  master_key?: MasterKeyInfo;
}

export interface MasterKeyInfo {
  mode: MasterKeyMode;
  state: MasterKeyState;
  reason?: string | null;
  l1_id?: string | null;
  keystore_id?: string | null;
}

export interface ServiceSeen {
  service_id: string;
  name?: string;
  last_seen?: string | null;
}

export interface DailyCount {
  date: string;
  count: number;
}

export interface Dashboard {
  tenant_id: string;
  status: string;
  region?: string;
  master_key: MasterKeyInfo;
  isolation?: { status: string; detail?: string };
  integration?: { status: string; detail?: string };
  l2_versions?: number;
  services: ServiceSeen[];
  operations_per_day: DailyCount[];
  kmip_endpoint?: string;
}

export interface Keystore {
  keystore_id: string;
  type: KeystoreType;
  name?: string;
  config: Record<string, unknown>;
}

export interface ConnectionCheck {
  name: string;
  ok: boolean;
  detail?: string;
  fix?: string | null;
  missing_permissions?: string[];
}

export interface ConnectionTest {
  ok: boolean;
  checks: ConnectionCheck[];
}

export interface L1Key {
  l1_id: string;
  keystore_id: string;
  key_ref: string;
  state?: string;
  tenants: string[];
}

export interface Operation {
  operation_id: string;
  kind?: string;
  state: "pending" | "running" | "succeeded" | "failed" | "rolled_back" | string;
  progress?: { done: number; total: number };
  message?: string | null;
}

export interface L2Version {
  version: number;
  created_at: string;
  state?: string;
}

export interface RotationPolicy {
  period_days: number;
  next_rotation?: string | null;
}

export interface ManagedObject {
  object_id: string;
  name?: string | null;
  state: string;
  algorithm?: string | null;
  created_by?: string | null;
  last_used?: string | null;
}

export interface Certificate {
  serial: string;
  service_id: string;
  subject?: string;
  spiffe_id?: string;
  not_after?: string;
  revoked?: boolean;
  certificate_pem?: string;
}

export interface AuditEvent {
  event_id: string;
  time: string;
  kind: string;
  actor?: string;
  outcome?: string;
  detail?: Record<string, unknown> | string | null;
}

export interface Notification {
  id: string;
  level: "info" | "warning" | "error";
  message: string;
  time?: string;
}
