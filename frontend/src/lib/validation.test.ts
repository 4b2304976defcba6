import { describe, expect, it } from "vitest";
import { toRequest, validateAll, validateCsr, validateServiceId } from "./validation";

describe("keystore validation", () => {
  it("accepts a well-formed AWS KMS key and region", () => {
    expect(validateAll("aws-kms", { key_ref: "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", region: "us-east-1" })).toEqual({});
  });
  it("explains what is wrong with each field", () => {
    const errors = validateAll("aws-kms", { key_ref: "my key", region: "", role_arn: "arn:aws:iam::12:role/x" });
    expect(errors.key_ref).toMatch(/KMS key ARN/);
    expect(errors.region).toMatch(/required/);
    expect(errors.role_arn).toMatch(/IAM role ARN/);
  });
  it("checks Azure, GCP and PKCS#11 details", () => {
    expect(Object.keys(validateAll("azure-key-vault", { vault_url: "http://x" }))).toEqual(["vault_url", "key_ref", "tenant_id", "client_id", "client_secret"]);
    expect(validateAll("gcp-kms", { key_ring: "projects/my-project/locations/europe-west1/keyRings/r", key_ref: "k", service_account_json: '{"type":"service_account"}' })).toEqual({});
    expect(validateAll("gcp-kms", { key_ring: "r", key_ref: "a/b", service_account_json: "{" })).toEqual({
      key_ring: expect.stringMatching(/keyRings/), key_ref: expect.stringMatching(/crypto key/), service_account_json: expect.stringMatching(/JSON/),
    });
    expect(validateAll("azure-key-vault", { vault_url: "https://my-hsm.managedhsm.azure.net", key_ref: "k/0123456789abcdef0123456789abcdef",
      tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47", client_id: "72f988bf-86f1-41af-91ab-2d7cd011db47", client_secret: "s" })).toEqual({});
    expect(validateAll("pkcs11", { module_path: "/usr/lib/softhsm/libsofthsm2.so", token_label: "t", key_ref: "k" }).pin).toMatch(/required/);
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
    expect(validateServiceId("Mongo DB")).toMatch(/letters, digits/);
  });
});

describe("request shape", () => {
  it("puts key, config and secrets where the API expects them", () => {
    // OpenKCM sets the AWS external id itself: a value typed in is not sent
    expect(toRequest("aws-kms", { key_ref: " alias/x ", region: "us-east-1", external_id: "s3cret", role_arn: "" })).toEqual({
      keyRef: "alias/x", config: { region: "us-east-1" }, secrets: {},
    });
    expect(toRequest("azure-key-vault", { key_ref: "k", vault_url: "https://v.vault.azure.net", client_secret: " s3cret " })).toEqual({
      keyRef: "k", config: { vault_url: "https://v.vault.azure.net" }, secrets: { client_secret: "s3cret" },
    });
  });
});
