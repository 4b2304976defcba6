import { useState } from "react";
import type { CmkApi } from "../api/client";
import type { ImportParameters, Keystore } from "../api/types";
import { ErrorMessage, Progress, Section, StateBadge } from "../components/common";
import { download, formatTime } from "../lib/format";
import { useAction } from "../lib/useAsync";

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

export function validateWrappedMaterial(value: string): string | null {
  const v = value.replace(/\s+/g, "");
  if (!v) return "Paste the wrapped key material (base64).";
  if (/BEGIN|PRIVATE/.test(value)) return "Paste only the wrapped material (base64), never a key in PEM form.";
  if (!BASE64.test(v) || v.length % 4 !== 0) return "The wrapped key material must be base64.";
  return null;
}

/** "-----BEGIN PUBLIC KEY-----" PEM around the DER public key the import parameters carry (base64). */
export function publicKeyPem(b64: string): string {
  return `-----BEGIN PUBLIC KEY-----\n${b64.match(/.{1,64}/g)?.join("\n") ?? ""}\n-----END PUBLIC KEY-----\n`;
}

/**
 * BYOK with your own key material in AWS KMS (DECISIONS 5): OpenKCM creates an EXTERNAL-origin key and
 * fetches its import parameters; you wrap your 256-bit key with the public key on your side and paste the
 * wrapped blob; OpenKCM forwards only that blob to KMS.
 */
export function KeyImport({ api, account, stores, onImported }: { api: CmkApi; account: string; stores: Keystore[]; onImported: (keyRef: string) => void }) {
  const aws = stores.filter((s) => s.provider === "aws-kms");
  const [storeId, setStoreId] = useState("");
  const [params, setParams] = useState<ImportParameters>();
  const [material, setMaterial] = useState("");
  const [materialError, setMaterialError] = useState<string | null>(null);
  const [done, setDone] = useState<Record<string, unknown>>();
  const start = useAction();
  const finish = useAction();
  if (!aws.length) return null;

  const begin = async () => {
    setParams(undefined);
    setDone(undefined);
    const reply = await start.run(async () => {
      if (!storeId) throw new Error("Choose the AWS KMS keystore to create the key in.");
      return api.startKeyImport(account, storeId, "OpenKCM L1 key (imported material)");
    });
    if (reply) setParams(reply);
  };
  const complete = async () => {
    const problem = validateWrappedMaterial(material);
    setMaterialError(problem);
    if (problem || !params) return;
    const reply = await finish.run(() =>
      api.completeKeyImport(account, storeId, { key_ref: params.key_ref, import_token: params.import_token, encrypted_key_material: material.replace(/\s+/g, "") }),
    );
    if (reply) {
      setDone(reply);
      setMaterial("");
      onImported(params.key_ref);
    }
  };

  return (
    <Section title="Import your own key material (AWS KMS)">
      <p className="muted">
        OpenKCM creates a KMS key without material in your account and hands you a one-time public wrapping key. You wrap your
        256-bit key with it on your side; only the wrapped blob is sent here.
      </p>
      <form className="filters" onSubmit={(e) => { e.preventDefault(); begin(); }}>
        <div className="field">
          <label htmlFor="import-store">AWS KMS keystore</label>
          <select id="import-store" value={storeId} onChange={(e) => setStoreId(e.target.value)}>
            <option value="">Choose…</option>
            {aws.map((s) => <option key={s.keystore_id} value={s.keystore_id}>{s.name || s.keystore_id}</option>)}
          </select>
        </div>
        <button type="submit" disabled={start.busy}>{start.busy ? "Creating…" : "Create key & get import parameters"}</button>
      </form>
      {start.busy && <Progress label="Creating the key and fetching its import parameters" />}
      <ErrorMessage error={start.error} />
      {params && (
        <div data-testid="import-parameters">
          <dl className="facts">
            <dt>New key</dt>
            <dd><code className="wrap">{params.key_ref}</code></dd>
            <dt>Wrapping</dt>
            <dd>{params.wrapping_algorithm} with {params.wrapping_key_spec}</dd>
            <dt>Valid until</dt>
            <dd>{formatTime(params.parameters_valid_to)}</dd>
          </dl>
          <div className="inline">
            <button type="button" onClick={() => download("wrapping-key.pem", publicKeyPem(params.public_key), "application/x-pem-file")}>Download wrapping public key</button>
          </div>
          <p>Wrap your key material on your side, e.g.:</p>
          <pre tabIndex={0}><code>{`openssl rand -out material.bin 32     # or your own 256-bit key
openssl pkeyutl -encrypt -in material.bin -out wrapped.bin -inkey wrapping-key.pem -pubin \\
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
base64 -w0 wrapped.bin`}</code></pre>
          <form noValidate onSubmit={(e) => { e.preventDefault(); complete(); }}>
            <div className="field">
              <label htmlFor="wrapped">Wrapped key material (base64)</label>
              <textarea id="wrapped" rows={4} value={material} onChange={(e) => setMaterial(e.target.value)} spellCheck={false}
                aria-invalid={materialError ? true : undefined} aria-describedby="wrapped-err" />
              <small id="wrapped-err" className="field-error">{materialError}</small>
            </div>
            <button type="submit" className="primary" disabled={finish.busy}>{finish.busy ? "Importing…" : "Import key material"}</button>
          </form>
          {finish.busy && <Progress label="Importing the wrapped key material" />}
          <ErrorMessage error={finish.error} />
          {done && (
            <p role="status" className="ok-text">
              Imported: <code>{params.key_ref}</code> is <StateBadge state={String(done.state ?? done.key_state ?? "Enabled")} />. Assign it to a tenant below.
            </p>
          )}
        </div>
      )}
    </Section>
  );
}
