import { describe, expect, it } from "vitest";
import { validateAll, validateCsr, validateServiceId } from "./validation";

describe("keystore validation", () => {
  it("accepts a well-formed AWS KMS key and region", () => {
    expect(validateAll("aws-kms", { key_arn: "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", region: "us-east-1" })).toEqual({});
  });
  it("explains what is wrong with each field", () => {
    const errors = validateAll("aws-kms", { key_arn: "my-key", region: "", role_arn: "arn:aws:iam::12:role/x" });
    expect(errors.key_arn).toMatch(/KMS key ARN/);
    expect(errors.region).toMatch(/required/);
    expect(errors.role_arn).toMatch(/IAM role ARN/);
  });
  it("checks Azure, GCP and PKCS#11 details", () => {
    expect(Object.keys(validateAll("azure-key-vault", { vault_url: "http://x" }))).toEqual(["vault_url", "key_name", "tenant_id", "client_id", "client_secret"]);
    expect(validateAll("gcp-kms", { key_name: "projects/my-project/locations/europe-west1/keyRings/r/cryptoKeys/k", credentials_json: '{"type":"service_account"}' })).toEqual({});
    expect(validateAll("gcp-kms", { key_name: "k", credentials_json: "{" }).credentials_json).toMatch(/JSON/);
    expect(validateAll("pkcs11", { module: "softhsm", token_label: "t", key_label: "k" }).pin).toMatch(/required/);
  });
});

describe("certificate form validation", () => {
  it("refuses a private key pasted instead of a CSR", () => {
    expect(validateCsr("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----")).toMatch(/private key/);
    expect(validateCsr("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n")).toBeNull();
    expect(validateCsr("")).toMatch(/Paste/);
  });
  it("checks service ids", () => {
    expect(validateServiceId("mongodb-prod")).toBeNull();
    expect(validateServiceId("Mongo DB")).toMatch(/lower-case/);
  });
});
