import { useEffect, useRef, useState } from "react";
import type { CmkApi } from "../api/client";
import type { ConnectionTest, Keystore, KeystoreType, L1Key, MasterKeyMode, Operation } from "../api/types";
import { ErrorMessage, Progress, Section, StateBadge } from "../components/common";
import { KEYSTORE_FIELDS, validateAll, validateField, type FieldErrors, type Fields } from "../lib/validation";
import { useAction } from "../lib/useAsync";

type Choice = "platform-managed" | KeystoreType;

const CHOICES: { value: Choice; label: string; detail: string }[] = [
  { value: "platform-managed", label: "Platform-managed", detail: "OpenKCM's own root key protects your tenant key. Nothing to configure." },
  { value: "aws-kms", label: "BYOK — AWS KMS", detail: "Link an existing KMS key in your AWS account." },
  { value: "azure-key-vault", label: "BYOK — Azure Key Vault", detail: "Link a key in your Azure key vault." },
  { value: "gcp-kms", label: "BYOK — Google Cloud KMS", detail: "Link a crypto key in your GCP project." },
  { value: "pkcs11", label: "HYOK — PKCS#11 HSM", detail: "Keep the master key in your own HSM. Changes need a multi-factor sign-in." },
];

const STEPS = ["Choose", "Connection", "Test", "Save", "Activate"];

export function modeOf(choice: Choice): MasterKeyMode {
  return choice === "platform-managed" ? "platform-managed" : choice === "pkcs11" ? "hyok" : "byok";
}

/** The key reference the API links as L1, taken from the connection details of each store type. */
export function keyRefOf(type: KeystoreType, fields: Fields): string {
  switch (type) {
    case "aws-kms":
      return fields.key_arn?.trim() ?? "";
    case "azure-key-vault":
      return fields.key_name?.trim() ?? "";
    case "gcp-kms":
      return fields.key_name?.trim() ?? "";
    case "pkcs11":
      return fields.key_label?.trim() ?? "";
  }
}

const TERMINAL = new Set(["succeeded", "failed", "rolled_back"]);

export function MasterKeyWizard({ api, tenant, pollMs = 500 }: { api: CmkApi; tenant: string; pollMs?: number }) {
  const [step, setStep] = useState(0);
  const [choice, setChoice] = useState<Choice>("aws-kms");
  const [fields, setFields] = useState<Fields>({});
  const [errors, setErrors] = useState<FieldErrors>({});
  const [keystore, setKeystore] = useState<Keystore>();
  const [test, setTest] = useState<ConnectionTest>();
  const [l1, setL1] = useState<L1Key>();
  const [op, setOp] = useState<Operation>();
  const action = useAction();
  const headingRef = useRef<HTMLHeadingElement>(null);

  useEffect(() => headingRef.current?.focus(), [step]);

  // Poll the activation until it ends.
  useEffect(() => {
    if (!op || TERMINAL.has(op.state)) return;
    const timer = window.setTimeout(async () => {
      const next = await action.run(() => api.operation(op.operation_id));
      if (next) setOp(next);
    }, pollMs);
    return () => window.clearTimeout(timer);
  }, [op, api, pollMs, action]);

  const isStore = choice !== "platform-managed";
  const specs = isStore ? KEYSTORE_FIELDS[choice] : [];

  const setField = (name: string, value: string) => {
    setFields((f) => ({ ...f, [name]: value }));
    if (errors[name]) {
      const spec = specs.find((s) => s.name === name)!;
      setErrors((e) => ({ ...e, [name]: validateField(spec, value) ?? "" }));
    }
  };
  const blur = (name: string) => {
    const spec = specs.find((s) => s.name === name)!;
    setErrors((e) => ({ ...e, [name]: validateField(spec, fields[name] ?? "") ?? "" }));
  };

  const configFromFields = (): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const s of specs) if ((fields[s.name] ?? "").trim() !== "") out[s.name] = fields[s.name].trim();
    return out;
  };

  const runTest = async () => {
    if (!isStore) return;
    const found = validateAll(choice, fields);
    setErrors(found);
    if (Object.keys(found).length) return;
    setTest(undefined);
    const result = await action.run(async () => {
      const config = configFromFields();
      const name = fields.name?.trim() || `${choice} for ${tenant}`;
      const store = keystore ? await api.updateKeystore(keystore.keystore_id, name, config) : await api.createKeystore(choice, name, config);
      setKeystore(store);
      return api.testKeystore(store.keystore_id, keyRefOf(choice, fields));
    });
    if (result) setTest(result);
  };

  const save = async () => {
    if (!keystore || !isStore) return;
    const linked = await action.run(async () => {
      const key = await api.linkL1Key(keystore.keystore_id, keyRefOf(choice, fields));
      return key.tenants.includes(tenant) ? key : api.assignL1Key(key.l1_id, tenant);
    });
    if (linked) {
      setL1(linked);
      setStep(4);
    }
  };

  const activate = async () => {
    const started = await action.run(() => api.activateMasterKey(tenant, modeOf(choice), l1?.l1_id));
    if (started) setOp(started);
  };

  const next = () => {
    if (step === 0) setStep(isStore ? 1 : 4);
    else if (step === 1) {
      const found = validateAll(choice as KeystoreType, fields);
      setErrors(found);
      if (!Object.keys(found).length) setStep(2);
    } else if (step === 2) setStep(3);
  };

  return (
    <Section title="Master key configuration">
      <ol className="steps" aria-label="Wizard steps">
        {STEPS.map((s, i) => (
          <li key={s} className={i === step ? "current" : i < step ? "done" : ""} aria-current={i === step ? "step" : undefined}>
            {s}
          </li>
        ))}
      </ol>
      <h3 tabIndex={-1} ref={headingRef}>{STEPS[step]}</h3>

      {step === 0 && (
        <fieldset>
          <legend>Where should your tenant's master key (L1) live?</legend>
          {CHOICES.map((c) => (
            <label key={c.value} className="choice">
              <input type="radio" name="mode" value={c.value} checked={choice === c.value} onChange={() => setChoice(c.value)} />
              <span>
                <strong>{c.label}</strong>
                <br />
                <span className="muted">{c.detail}</span>
              </span>
            </label>
          ))}
        </fieldset>
      )}

      {step === 1 && isStore && (
        <form
          noValidate
          onSubmit={(e) => {
            e.preventDefault();
            next();
          }}
        >
          <div className="field">
            <label htmlFor="f-name">Display name</label>
            <input id="f-name" value={fields.name ?? ""} onChange={(e) => setFields((f) => ({ ...f, name: e.target.value }))} placeholder={`${choice} for ${tenant}`} />
          </div>
          {specs.map((s) => {
            const id = `f-${s.name}`;
            const err = errors[s.name];
            const Input = s.name === "credentials_json" ? "textarea" : "input";
            return (
              <div className="field" key={s.name}>
                <label htmlFor={id}>
                  {s.label}
                  {s.required && <span aria-hidden="true"> *</span>}
                </label>
                <Input
                  id={id}
                  name={s.name}
                  type={s.secret && Input === "input" ? "password" : undefined}
                  autoComplete="off"
                  spellCheck={false}
                  required={s.required}
                  placeholder={s.placeholder}
                  value={fields[s.name] ?? ""}
                  aria-invalid={err ? true : undefined}
                  aria-describedby={`${id}-help ${id}-err`}
                  onChange={(e: React.ChangeEvent<HTMLInputElement | HTMLTextAreaElement>) => setField(s.name, e.target.value)}
                  onBlur={() => blur(s.name)}
                />
                {s.help && <small id={`${id}-help`} className="muted">{s.help}</small>}
                <small id={`${id}-err`} className="field-error" role={err ? "alert" : undefined}>{err}</small>
              </div>
            );
          })}
          <button type="submit" className="primary">Next</button>
        </form>
      )}

      {step === 2 && (
        <div>
          <p>OpenKCM checks that it can reach the key and use it for wrapping before you save.</p>
          <button type="button" className="primary" onClick={runTest} disabled={action.busy}>
            {action.busy ? "Testing…" : "Test connection"}
          </button>
          {action.busy && <Progress label="Running connection checks" />}
          {test && <TestResult test={test} />}
        </div>
      )}

      {step === 3 && (
        <div>
          <p>
            Link <code>{keyRefOf(choice as KeystoreType, fields)}</code> as the master key of tenant <code>{tenant}</code>. Nothing
            changes for running services until you activate.
          </p>
          <button type="button" className="primary" onClick={save} disabled={action.busy}>
            {action.busy ? "Saving…" : "Save"}
          </button>
        </div>
      )}

      {step === 4 && (
        <div>
          <p>
            Activation re-wraps every retained version of the tenant key under the{" "}
            {choice === "platform-managed" ? "platform root key" : "new master key"} and switches over atomically. If anything fails, the
            previous master key stays in force.
          </p>
          {!op && (
            <button type="button" className="primary" onClick={activate} disabled={action.busy}>
              {action.busy ? "Starting…" : "Activate"}
            </button>
          )}
          {op && <Activation op={op} />}
        </div>
      )}

      <ErrorMessage error={action.error} />

      <div className="wizard-nav">
        {step > 0 && !op && (
          <button type="button" onClick={() => setStep(step === 4 && !isStore ? 0 : step - 1)} disabled={action.busy}>
            Back
          </button>
        )}
        {(step === 0 || (step === 2 && test?.ok)) && (
          <button type="button" className="primary" onClick={next}>
            Next
          </button>
        )}
      </div>
    </Section>
  );
}

function TestResult({ test }: { test: ConnectionTest }) {
  return (
    <div className={`test-result ${test.ok ? "ok" : "bad"}`} aria-live="polite">
      <p role="status">
        <strong>{test.ok ? "All checks passed." : "Some checks failed — fix them and test again."}</strong>
      </p>
      <ul className="checks">
        {test.checks.map((c) => (
          <li key={c.name} className={c.ok ? "ok" : "bad"}>
            <span className="mark" aria-hidden="true">{c.ok ? "✓" : "✗"}</span>
            <span className="sr-only">{c.ok ? "passed" : "failed"}:</span> <strong>{c.name}</strong>
            {c.detail && <span> — {c.detail}</span>}
            {!c.ok && c.missing_permissions && c.missing_permissions.length > 0 && (
              <div>
                Missing permissions:{" "}
                {c.missing_permissions.map((p) => (
                  <code key={p} className="perm">{p}</code>
                ))}
              </div>
            )}
            {!c.ok && c.fix && <div className="fix">How to fix: {c.fix}</div>}
          </li>
        ))}
      </ul>
    </div>
  );
}

function Activation({ op }: { op: Operation }) {
  const label =
    op.state === "succeeded"
      ? "Active"
      : op.state === "rolled_back"
        ? "Rolled back"
        : op.state === "failed"
          ? "Failed"
          : "Re-wrapping tenant key versions";
  return (
    <div className="activation">
      {!TERMINAL.has(op.state) && <Progress label={label} done={op.progress?.done} total={op.progress?.total} />}
      {TERMINAL.has(op.state) && (
        <p role="status" data-testid="activation-result">
          Result: <StateBadge state={label} />
          {op.progress && ` — ${op.progress.done} of ${op.progress.total} versions re-wrapped`}
        </p>
      )}
      {op.state === "rolled_back" && (
        <p className="error" role="alert">
          The switch was rolled back: the previous master key is still in force. {op.message}
        </p>
      )}
      {op.state === "failed" && op.message && (
        <p className="error" role="alert">
          {op.message}
        </p>
      )}
    </div>
  );
}
