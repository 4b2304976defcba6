import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { CmkApi } from "../api/client";
import { fakeFetch } from "../test/fakeServer";
import { KeyImport, publicKeyPem, validateWrappedMaterial } from "./KeyImport";

const ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

describe("key material import (EXTERNAL origin)", () => {
  it("fetches import parameters, refuses a PEM paste, and forwards only the wrapped blob", async () => {
    const user = userEvent.setup();
    let forwarded: unknown;
    let imported = "";
    const api = new CmkApi("http://api.test", fakeFetch({
      "POST /v1/accounts/acme/keystores/ks1/import": () => ({ body: {
        key_ref: ARN, key_id: "1234", wrapping_algorithm: "RSAES_OAEP_SHA_256", wrapping_key_spec: "RSA_4096",
        public_key: "MIIBIjAN", import_token: "dG9rZW4=", parameters_valid_to: "2026-11-30T10:00:00+00:00",
      } }),
      "POST /v1/accounts/acme/keystores/ks1/import/complete": ({ body }) => { forwarded = body; return { body: { key_ref: ARN, state: "Enabled" } }; },
    }));
    render(<KeyImport api={api} account="acme" stores={[{ keystore_id: "ks1", provider: "aws-kms", name: "prod", config: {} }]} onImported={(k) => { imported = k; }} />);
    await user.selectOptions(screen.getByLabelText("AWS KMS keystore"), "ks1");
    await user.click(screen.getByRole("button", { name: "Create key & get import parameters" }));
    expect((await screen.findByTestId("import-parameters")).textContent).toContain("RSAES_OAEP_SHA_256 with RSA_4096");
    const box = screen.getByLabelText("Wrapped key material (base64)");
    await user.type(box, "-----BEGIN PRIVATE KEY-----");
    await user.click(screen.getByRole("button", { name: "Import key material" }));
    expect(screen.getByText(/never a key in PEM form/)).toBeTruthy();
    expect(forwarded).toBeUndefined();
    await user.clear(box);
    await user.type(box, "d3JhcHBlZA==");
    await user.click(screen.getByRole("button", { name: "Import key material" }));
    expect(await screen.findByText(/Imported:/)).toBeTruthy();
    expect(forwarded).toEqual({ key_ref: ARN, import_token: "dG9rZW4=", encrypted_key_material: "d3JhcHBlZA==" });
    expect(imported).toBe(ARN);
  });

  it("checks the pasted blob and wraps the public key as PEM", () => {
    expect(validateWrappedMaterial("not base64!")).toMatch(/base64/);
    expect(validateWrappedMaterial("")).toMatch(/Paste/);
    expect(publicKeyPem("A".repeat(70))).toBe(`-----BEGIN PUBLIC KEY-----\n${"A".repeat(64)}\nAAAAAA\n-----END PUBLIC KEY-----\n`);
  });
});
