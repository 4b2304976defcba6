/**
 * Inline validation of the master key wizard's connection details. Errors are plain sentences the
 * form shows beside the field; the API validates again (the UI check is a convenience, not a gate).
 */
import type { KeystoreType } from "../api/types";

export type Fields = Record<string, string>;
export type FieldErrors = Record<string, string>;

export interface FieldSpec {
  name: string;
  label: string;
  required?: boolean;
  secret?: boolean;
  placeholder?: string;
  help?: string;
  check?: (value: string) => string | null;
}

const AWS_KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key\/[0-9a-f-]{36}|alias\/[A-Za-z0-9/_-]+)$/;
const AWS_ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;
const AWS_REGION = /^[a-z]{2}(-gov)?-[a-z]+-\d$/;
const AZURE_VAULT = /^https:\/\/[a-z0-9][a-z0-9-]{1,22}[a-z0-9]\.vault\.(azure\.net|azure\.cn|usgovcloudapi\.net)\/?$/i;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const GCP_KEY = /^projects\/[a-z][a-z0-9-]{4,28}[a-z0-9]\/locations\/[a-z0-9-]+\/keyRings\/[\w-]{1,63}\/cryptoKeys\/[\w-]{1,63}$/;

const pattern = (re: RegExp, message: string) => (value: string) => (re.test(value.trim()) ? null : message);

export const KEYSTORE_FIELDS: Record<KeystoreType, FieldSpec[]> = {
  "aws-kms": [
    { name: "key_arn", label: "KMS key ARN", required: true, placeholder: "arn:aws:kms:eu-west-1:123456789012:key/…",
      check: pattern(AWS_KEY_ARN, "Enter a KMS key ARN: arn:aws:kms:<region>:<12-digit account>:key/<key id> (or alias/<name>).") },
    { name: "region", label: "Region", required: true, placeholder: "eu-west-1",
      check: pattern(AWS_REGION, "Enter an AWS region such as eu-west-1.") },
    { name: "role_arn", label: "IAM role ARN OpenKCM assumes", placeholder: "arn:aws:iam::123456789012:role/openkcm-access",
      help: "Optional locally. In AWS, the role whose trust policy lets OpenKCM assume it.",
      check: (v) => (v.trim() === "" || AWS_ROLE_ARN.test(v.trim()) ? null : "Enter an IAM role ARN: arn:aws:iam::<12-digit account>:role/<name>.") },
  ],
  "azure-key-vault": [
    { name: "vault_url", label: "Vault URL", required: true, placeholder: "https://my-vault.vault.azure.net",
      check: pattern(AZURE_VAULT, "Enter the vault URL, e.g. https://my-vault.vault.azure.net.") },
    { name: "key_name", label: "Key name", required: true, check: pattern(/^[0-9a-zA-Z-]{1,127}$/, "Key names use letters, digits and dashes (1–127).") },
    { name: "tenant_id", label: "Directory (tenant) ID", required: true, check: pattern(GUID, "Enter the directory ID as a GUID.") },
    { name: "client_id", label: "Application (client) ID", required: true, check: pattern(GUID, "Enter the application ID as a GUID.") },
    { name: "client_secret", label: "Client secret", required: true, secret: true, help: "Sent once to the API and stored encrypted; never shown again." },
  ],
  "gcp-kms": [
    { name: "key_name", label: "Crypto key resource name", required: true,
      placeholder: "projects/my-project/locations/europe-west1/keyRings/ring/cryptoKeys/key",
      check: pattern(GCP_KEY, "Enter projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>.") },
    { name: "credentials_json", label: "Service account key (JSON)", required: true, secret: true,
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
    { name: "module", label: "PKCS#11 module", required: true, help: "One of the modules your operator allow-listed." },
    { name: "token_label", label: "Token label", required: true, check: pattern(/^.{1,32}$/, "Token labels are 1–32 characters.") },
    { name: "key_label", label: "Key label", required: true },
    { name: "pin", label: "User PIN", required: true, secret: true, help: "Sent once to the API and stored encrypted; never shown again." },
  ],
};

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
  return /^[a-z0-9][a-z0-9-]{0,62}$/.test(value) ? null : "Service ids use lower-case letters, digits and dashes (1–63), e.g. mongodb-prod.";
}
