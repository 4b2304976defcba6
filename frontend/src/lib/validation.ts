/**
 * Inline validation of the master key wizard's connection details. Errors are plain sentences the
 * form shows beside the field; the API validates again (the UI check is a convenience, not a gate).
 */
import type { KeystoreProvider as KeystoreType } from "../api/types";

export type Fields = Record<string, string>;
export type FieldErrors = Record<string, string>;

/** Where a form field goes in the API call: the keystore's config, its secrets, or the L1 key reference. */
export type Target = "config" | "secrets" | "key_ref";

export interface FieldSpec {
  name: string;
  label: string;
  target: Target;
  required?: boolean;
  secret?: boolean;
  multiline?: boolean;
  placeholder?: string;
  help?: string;
  check?: (value: string) => string | null;
}

// The same shapes the connectors in openkcm/domain/keystores accept.
const AWS_KEY_REF = /^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key\/[A-Za-z0-9-]+|alias\/[A-Za-z0-9/_-]+)|alias\/[A-Za-z0-9/_-]{1,250}|[A-Za-z0-9-]{36}|mrk-[a-f0-9]{32})$/;
const AWS_ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;
const AWS_REGION = /^[a-z]{2}(-[a-z]+)+-\d$/;
const URL_RE = /^https?:\/\/[^\s/]+(\/\S*)?$/;
const AZURE_VAULT = /^https:\/\/[a-z0-9][a-z0-9-]{1,22}[a-z0-9]\.(vault|managedhsm)\.(azure\.net|azure\.cn|usgovcloudapi\.net)\/?$/;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const GCP_RING = /^projects\/[a-z][a-z0-9-]{4,28}[a-z0-9]\/locations\/[a-z0-9-]{1,63}\/keyRings\/[A-Za-z0-9_-]{1,63}$/;
const GCP_KEY = /^([A-Za-z0-9_-]{1,63}|projects\/[a-z][a-z0-9-]{4,28}[a-z0-9]\/locations\/[a-z0-9-]{1,63}\/keyRings\/[A-Za-z0-9_-]{1,63}\/cryptoKeys\/[A-Za-z0-9_-]{1,63})$/;

const pattern = (re: RegExp, message: string) => (value: string) => (re.test(value.trim()) ? null : message);

export const KEYSTORE_FIELDS: Record<KeystoreType, FieldSpec[]> = {
  "aws-kms": [
    { name: "key_ref", target: "key_ref", label: "KMS key ARN", required: true, placeholder: "arn:aws:kms:eu-west-1:123456789012:key/…",
      check: pattern(AWS_KEY_REF, "Enter a KMS key ARN (arn:aws:kms:<region>:<12-digit account>:key/<key id>), an alias (alias/<name>) or a key id.") },
    { name: "region", target: "config", label: "Region", required: true, placeholder: "eu-west-1",
      check: pattern(AWS_REGION, "Enter an AWS region such as eu-west-1.") },
    { name: "role_arn", target: "config", label: "IAM role ARN OpenKCM assumes", placeholder: "arn:aws:iam::123456789012:role/openkcm-access",
      help: "The role in your account whose trust policy lets OpenKCM assume it, with the external id OpenKCM sets for your account (the trust template shows it). Needed outside a local emulator: OpenKCM does not lend its own identity to a keystore, so the API refuses an AWS KMS keystore without a role.",
      check: pattern(AWS_ROLE_ARN, "Enter an IAM role ARN: arn:aws:iam::<12-digit account>:role/<name>.") },
    { name: "endpoint_url", target: "config", label: "KMS endpoint URL", placeholder: "https://kms.eu-west-1.amazonaws.com",
      help: "Only for a VPC endpoint or a local emulator.", check: pattern(URL_RE, "Enter an http(s) URL.") },
  ],
  "azure-key-vault": [
    { name: "vault_url", target: "config", label: "Vault URL", required: true, placeholder: "https://my-vault.vault.azure.net",
      check: pattern(AZURE_VAULT, "Enter the vault (or managed HSM) URL, e.g. https://my-vault.vault.azure.net.") },
    { name: "key_ref", target: "key_ref", label: "Key name", required: true, placeholder: "tenant-master",
      check: pattern(/^([A-Za-z0-9-]{1,127}(\/[0-9a-fA-F]{32})?|https:\/\/\S+\/keys\/[A-Za-z0-9-]{1,127}(\/[0-9a-fA-F]{32})?)$/, "Enter the key name (letters, digits, dashes), name/version, or the key URL.") },
    { name: "tenant_id", target: "config", label: "Directory (tenant) ID", required: true, check: pattern(GUID, "Enter the directory ID as a GUID.") },
    { name: "client_id", target: "config", label: "Application (client) ID", required: true, check: pattern(GUID, "Enter the application ID as a GUID.") },
    { name: "client_secret", target: "secrets", label: "Client secret", required: true, secret: true,
      help: "Sent once to the API and stored wrapped; never shown again." },
  ],
  "gcp-kms": [
    { name: "key_ring", target: "config", label: "Key ring", required: true,
      placeholder: "projects/my-project/locations/europe-west1/keyRings/openkcm",
      check: pattern(GCP_RING, "Enter projects/<project>/locations/<location>/keyRings/<ring>.") },
    { name: "key_ref", target: "key_ref", label: "Crypto key", required: true, placeholder: "tenant-master",
      check: pattern(GCP_KEY, "Enter the crypto key id (letters, digits, '-', '_') or its full resource name.") },
    { name: "service_account_json", target: "secrets", label: "Service account key (JSON)", required: true, secret: true, multiline: true,
      help: "Sent once to the API and stored wrapped; never shown again.",
      check: (v) => {
        try {
          const parsed = JSON.parse(v);
          return parsed && parsed.type === "service_account" ? null : "Paste a service account key (its \"type\" is \"service_account\").";
        } catch {
          return "Paste the service account key file as JSON.";
        }
      } },
  ],
  pkcs11: [
    { name: "module_path", target: "config", label: "PKCS#11 module", required: true, placeholder: "/usr/lib/softhsm/libsofthsm2.so",
      help: "One of the modules your operator allow-listed (a module is native code, so it is never chosen freely)." },
    { name: "token_label", target: "config", label: "Token label", required: true, check: pattern(/^.{1,32}$/, "Token labels are 1–32 characters.") },
    { name: "key_ref", target: "key_ref", label: "Key label", required: true },
    { name: "pin", target: "secrets", label: "User PIN", required: true, secret: true,
      help: "Sent once to the API and stored wrapped; never shown again." },
  ],
};

/** Splits the form into the API's config, secrets and key reference; empty optional fields are left out. */
export function toRequest(type: KeystoreType, fields: Fields): { config: Record<string, string>; secrets: Record<string, string>; keyRef: string } {
  const config: Record<string, string> = {};
  const secrets: Record<string, string> = {};
  let keyRef = "";
  for (const spec of KEYSTORE_FIELDS[type]) {
    const value = (fields[spec.name] ?? "").trim();
    if (!value) continue;
    if (spec.target === "key_ref") keyRef = value;
    else if (spec.target === "secrets") secrets[spec.name] = value;
    else config[spec.name] = value;
  }
  return { config, secrets, keyRef };
}

export function validateField(spec: FieldSpec, value: string): string | null {
  if (!value || value.trim() === "") return spec.required ? `${spec.label} is required.` : null;
  return spec.check ? spec.check(value) : null;
}

export function validateAll(type: KeystoreType, fields: Fields): FieldErrors {
  const errors: FieldErrors = {};
  for (const spec of KEYSTORE_FIELDS[type]) {
    const message = validateField(spec, fields[spec.name] ?? "");
    if (message) errors[spec.name] = message;
  }
  return errors;
}

const CSR = /^-----BEGIN (NEW )?CERTIFICATE REQUEST-----\r?\n[A-Za-z0-9+/=\r\n]+-----END (NEW )?CERTIFICATE REQUEST-----\s*$/;

export function validateCsr(pem: string): string | null {
  if (!pem.trim()) return "Paste a certificate signing request (PEM).";
  if (/PRIVATE KEY/.test(pem)) return "This is a private key. Never paste it anywhere: paste the CSR (BEGIN CERTIFICATE REQUEST) only.";
  return CSR.test(pem.trim() + "\n") ? null : "Paste a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----).";
}

export function validateServiceId(value: string): string | null {
  return /^[A-Za-z0-9._-]{1,64}$/.test(value) ? null : "Service ids use letters, digits, '.', '_' and '-' (1–64), e.g. mongodb-prod.";
}
