import { useEffect, useRef, useState } from "react";
import { ApiError, type CmkApi } from "../api/client";
import type { ConnectionCheck, ConnectionTest, Keystore, KeystoreProvider, Tenant } from "../api/types";
import { ErrorMessage, Progress, Section, StateBadge } from "../components/common";
import { KEYSTORE_FIELDS, toRequest, validateAll, validateField, type FieldErrors, type Fields } from "../lib/validation";
import { useAction } from "../lib/useAsync";
import { TrustTemplate } from "./TrustTemplate";

type Choice = "platform-managed" | KeystoreProvider;

const CHOICES: { value: Choice; label: string; detail: string }[] = [
  { value: "platform-managed", label: "Platform-managed", detail: "OpenKCM's own root key protects your tenant key. Nothing to configure." },
  { value: "aws-kms", label: "BYOK — AWS KMS", detail: "Link an existing KMS key in your AWS account." },
  { value: "azure-key-vault", label: "BYOK — Azure Key Vault", detail: "Link a key in your Azure key vault." },
  { value: "gcp-kms", label: "BYOK — Google Cloud KMS", detail: "Link a crypto key in your GCP project." },
  { value: "pkcs11", label: "HYOK — PKCS#11 HSM", detail: "Keep the master key in your own HSM. Changes need a multi-factor sign-in." },
];

/** Form fields that go to the keystore's `secrets`: dropped from state once the API has them. */
const SECRET_FIELDS = new Set(Object.values(KEYSTORE_FIELDS).flat().filter((s) => s.target === "secrets").map((s) => s.name));
const withoutSecrets = (fields: Fields): Fields => Object.fromEntries(Object.entries(fields).filter(([k]) => !SECRET_FIELDS.has(k)));

const STEPS = ["Choose", "Connection", "Test connection", "Save & activate"];
const LAST = STEPS.length - 1;

export interface TenantFailure {
  tenant_id?: string;
  message: string;
  fix?: string;
}

/** The tenants a link or return rolled back (HTTP 200 with `ok: false` per tenant), with reason and fix. */
export function tenantFailures(result: unknown): TenantFailure[] {
  const rows = Array.isArray(result) ? result : result && typeof result === "object" ? [result] : [];
  const out: TenantFailure[] = [];
  for (const row of rows as Record<string, unknown>[]) {
    if (!row || row.ok !== false) continue;
    const err = row.error;
    if (err && typeof err === "object") {
      const e = err as Record<string, unknown>;
      const details = (e.details ?? {}) as Record<string, unknown>;
      const fix = (e.fix ?? details.fix) as string | undefined;
      out.push({ tenant_id: row.tenant_id as string | undefined, message: String(e.message ?? e.error ?? "failed"), fix });
    } else {
      out.push({ tenant_id: row.tenant_id as string | undefined, message: typeof err === "string" && err ? err : "failed" });
    }
  }
  return out;
}

export function tenantFailure(result: unknown, tenant: string): string | undefined {
  const f = tenantFailures(result).find((x) => x.tenant_id === undefined || x.tenant_id === tenant);
  return f ? [f.message, f.fix && `How to fix: ${f.fix}`].filter(Boolean).join(" ") : undefined;
}

export function RolledBack({ failures }: { failures: TenantFailure[] }) {
  if (!failures.length) return null;
  return (
    <div className="error" role="alert" data-testid="rolled-back">
      {failures.map((f, i) => (
        <p key={i}>
          <strong>Rolled back{f.tenant_id ? ` for ${f.tenant_id}` : ""}:</strong> {f.message}. The previous master key stays in force.
          {f.fix && <><br />How to fix: {f.fix}</>}
        </p>
      ))}
    </div>
  );
}

/** Permissions a failed check names, from the API's fields or its message ("permission kms:X missing"). */
export function missingPermissions(check: ConnectionCheck): string[] {
  if (check.ok) return [];
  if (check.missing_permissions?.length) return check.missing_permissions;
  if (typeof check.action === "string" && check.action) return [check.action];
  const found = [...(check.message ?? check.detail ?? "").matchAll(/permissions? ([A-Za-z0-9]+:[A-Za-z0-9*]+) (?:is )?missing/g)].map((m) => m[1]);
  return [...new Set(found)];
}

/** One progress report of the link/re-wrap flow, as a sentence. */
export function describeStep(step: unknown): string {
  if (typeof step === "string") return step;
  if (step && typeof step === "object") {
    const s = step as Record<string, unknown>;
    const text = s.message ?? s.step ?? s.phase ?? s.stage ?? s.event;
    const counts = typeof s.done === "number" && typeof s.total === "number" && s.total > 0 ? ` (${s.done}/${s.total})` : "";
    const who = typeof s.tenant_id === "string" ? `${s.tenant_id}: ` : "";
    if (typeof text === "string") return `${who}${text}${counts}`;
    if (Array.isArray(s.args)) return (s.args as unknown[]).join(" ");
    return JSON.stringify(step);
  }
  return String(step);
}

export function MasterKeyWizard({ api, account, tenant, mfa }: { api: CmkApi; account: string; tenant: string; mfa: boolean }) {
  const [step, setStep] = useState(0);
  const [choice, setChoice] = useState<Choice>("aws-kms");
  const [name, setName] = useState("");
  const [fields, setFields] = useState<Fields>({});
  const [errors, setErrors] = useState<FieldErrors>({});
  const [keystore, setKeystore] = useState<Keystore>();
  const [test, setTest] = useState<ConnectionTest>();
  const [steps, setSteps] = useState<string[]>();
  const [after, setAfter] = useState<Tenant>();
  const [failed, setFailed] = useState(false);
  const [failure, setFailure] = useState<string>();
  const [shown, setShown] = useState<Record<string, boolean>>({});
  const action = useAction();
  const headingRef = useRef<HTMLHeadingElement>(null);
  const first = useRef(true);

  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    headingRef.current?.focus();
  }, [step]);

  const isStore = choice !== "platform-managed";
  // Once this keystore is saved the API holds its secrets: an empty secret field means "keep them".
  const saved = isStore && keystore?.provider === choice;
  const specs = (isStore ? KEYSTORE_FIELDS[choice] : []).map((s) => (saved && s.target === "secrets" ? { ...s, required: false } : s));

  const setField = (field: string, value: string) => {
    setFields((f) => ({ ...f, [field]: value }));
    setTest(undefined);
    if (errors[field]) {
      const spec = specs.find((s) => s.name === field)!;
      setErrors((e) => ({ ...e, [field]: validateField(spec, value) ?? "" }));
    }
  };
  const blur = (field: string) => {
    const spec = specs.find((s) => s.name === field)!;
    setErrors((e) => ({ ...e, [field]: validateField(spec, fields[field] ?? "") ?? "" }));
  };
  const valid = () => {
    const found = validateAll(choice as KeystoreProvider, fields);
    for (const s of specs) if (!s.required && !(fields[s.name] ?? "").trim()) delete found[s.name];
    setErrors(found);
    return Object.keys(found).length === 0;
  };

  const runTest = async () => {
    if (!isStore || !valid()) return;
    setTest(undefined);
    const { config, secrets, keyRef } = toRequest(choice, fields);
    const label = name.trim() || `${choice} for ${tenant}`;
    const result = await action.run(async () => {
      let store = keystore;
      if (!store || store.provider !== choice) {
        store = await api.createKeystore(account, { provider: choice, name: label, config, secrets });
      } else {
        store = await api.updateKeystore(account, store.keystore_id, { name: label, config, ...(Object.keys(secrets).length ? { secrets } : {}) });
      }
      setKeystore(store);
      setFields(withoutSecrets); // the API has them now; nothing keeps them in this page
      return api.testKeystore(account, store.keystore_id, keyRef);
    });
    if (result) setTest(result);
  };

  const activate = async () => {
    setSteps(undefined);
    setAfter(undefined);
    setFailed(false);
    setFailure(undefined);
    const reply = await action.run(async () => {
      if (isStore) {
        if (!keystore) throw new Error("Test the connection first: it saves the keystore.");
        return api.linkL1Key(account, keystore.keystore_id, toRequest(choice, fields).keyRef, [tenant]);
      }
      return api.returnToPlatform(tenant);
    });
    if (reply) {
      setSteps((reply.progress ?? []).map(describeStep));
      const failure = tenantFailure(reply.result, tenant);
      if (failure !== undefined) {
        setFailed(true);
        setFailure(failure);
      }
    } else setFailed(true);
    // The tenant's state after the switch (or after the rollback) comes from the API, not from us.
    try {
      setAfter(await api.tenant(tenant));
    } catch {
      /* the error of the switch itself is already shown */
    }
  };

  const next = () => {
    if (step === 0) setStep(isStore ? 1 : LAST);
    else if (step === 1 && valid()) setStep(2);
    else if (step === 2 && test?.ok) setStep(LAST);
  };
  const back = () => setStep(step === LAST && !isStore ? 0 : Math.max(0, step - 1));
  const done = steps !== undefined || failed;

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
          <legend>Where should the master key (L1) of tenant {tenant} live?</legend>
          {CHOICES.map((c) => (
            <label key={c.value} className="choice">
              <input type="radio" name="mode" value={c.value} checked={choice === c.value} onChange={() => { setChoice(c.value); setTest(undefined); setErrors({}); }} />
              <span>
                <strong>{c.label}</strong>
                <br />
                <span className="muted">{c.detail}</span>
              </span>
            </label>
          ))}
          {choice === "pkcs11" && !mfa && (
            <p className="error" role="alert">
              Your sign-in has no second factor: the API refuses HYOK changes without MFA. Sign out and sign in again with MFA.
            </p>
          )}
        </fieldset>
      )}

      {step === 1 && isStore && (
        <form noValidate onSubmit={(e) => { e.preventDefault(); next(); }}>
          <div className="field">
            <label htmlFor="f-name">Keystore name</label>
            <input id="f-name" value={name} onChange={(e) => setName(e.target.value)} placeholder={`${choice} for ${tenant}`} maxLength={128} />
          </div>
          {specs.map((s) => {
            const id = `f-${s.name}`;
            const err = errors[s.name];
            const common = {
              id,
              name: s.name,
              autoComplete: s.target === "secrets" ? "new-password" : "off",
              spellCheck: false,
              required: s.required,
              placeholder: s.placeholder,
              value: fields[s.name] ?? "",
              "aria-invalid": err ? true : undefined,
              "aria-describedby": `${id}-help ${id}-err`,
              onBlur: () => blur(s.name),
            };
            return (
              <div className="field" key={s.name}>
                <label htmlFor={id}>
                  {s.label}
                  {s.required ? <span aria-hidden="true"> *</span> : <span className="muted"> (optional)</span>}
                </label>
                {s.multiline ? (
                  <>
                    <textarea rows={5} {...common} className={s.secret && !shown[s.name] ? "masked" : undefined}
                      placeholder={saved && s.secret ? "Saved — paste again only to replace it" : common.placeholder}
                      onChange={(e) => setField(s.name, e.target.value)} />
                    {s.secret && (
                      <button type="button" className="reveal" aria-controls={id} onClick={() => setShown((v) => ({ ...v, [s.name]: !v[s.name] }))}>
                        {shown[s.name] ? "Hide" : "Show"}
                      </button>
                    )}
                  </>
                ) : (
                  <input type={s.secret ? "password" : "text"} {...common}
                    placeholder={saved && s.secret ? "Saved — type again only to replace it" : common.placeholder} onChange={(e) => setField(s.name, e.target.value)} />
                )}
                {s.help && <small id={`${id}-help`} className="muted">{s.help}</small>}
                <small id={`${id}-err`} className="field-error" role={err ? "alert" : undefined}>{err}</small>
              </div>
            );
          })}
          {choice === "aws-kms" && (
            <TrustTemplate api={api} account={account} keyRef={(fields.key_ref ?? "").trim()} onUseRole={(arn) => setField("role_arn", arn)} />
          )}
          <button type="submit" className="primary">Next</button>
        </form>
      )}

      {step === 2 && (
        <div>
          <p>
            OpenKCM saves the keystore and checks that it can reach <code>{toRequest(choice as KeystoreProvider, fields).keyRef}</code> and
            use it for wrapping. Nothing changes for the tenant yet.
          </p>
          <button type="button" className="primary" onClick={runTest} disabled={action.busy}>
            {action.busy ? "Testing…" : test ? "Test again" : "Test connection"}
          </button>
          {action.busy && <Progress label="Running connection checks" />}
          {test && <TestResult test={test} />}
        </div>
      )}

      {step === LAST && (
        <div>
          <p>
            Activation re-wraps every retained version of the tenant key under the{" "}
            {isStore ? "new master key" : "platform root key"}, then switches over atomically. If anything fails, it is rolled back and the
            previous master key stays in force.
          </p>
          {!done && (
            <button type="button" className="primary" onClick={activate} disabled={action.busy}>
              {action.busy ? "Activating…" : isStore ? "Save & activate" : "Switch to platform-managed"}
            </button>
          )}
          {action.busy && <Progress label="Re-wrapping every tenant key version and switching over" />}
          {steps && steps.length > 0 && (
            <ol className="progress-steps" aria-label="Activation progress">
              {steps.map((s, i) => <li key={i}>{s}</li>)}
            </ol>
          )}
          {failed && (
            <p className="error" role="alert">
              Activation failed and was rolled back{after ? `: tenant ${tenant} still uses ${after.key_mode} (${after.l1_state})` : ""}.
              {failure && <> {failure}</>}
            </p>
          )}
          {after && (
            <p role="status" data-testid="activation-result">
              Master key of {tenant}: {after.key_mode} — <StateBadge state={after.l1_state} />
              {after.l1_reason && <span className="reason"> {after.l1_reason}</span>}
            </p>
          )}
        </div>
      )}

      <ErrorMessage error={action.error} />
      {action.error instanceof ApiError && action.error.body !== undefined && <ErrorFix body={action.error.body} />}

      <div className="wizard-nav">
        {step > 0 && !done && (
          <button type="button" onClick={back} disabled={action.busy}>Back</button>
        )}
        {(step === 0 || (step === 2 && test?.ok)) && (
          <button type="button" className="primary" onClick={next}>Next</button>
        )}
        {done && (
          <button type="button" onClick={() => { setStep(0); setSteps(undefined); setAfter(undefined); setFailed(false); setTest(undefined); setKeystore(undefined); setFields(withoutSecrets); setShown({}); action.clearError(); }}>
            Start again
          </button>
        )}
      </div>
    </Section>
  );
}

function ErrorFix({ body }: { body: unknown }) {
  const details = (body as { details?: Record<string, unknown> })?.details;
  const fix = details && typeof details.fix === "string" ? details.fix : undefined;
  return fix ? <p className="fix">How to fix: {fix}</p> : null;
}

function TestResult({ test }: { test: ConnectionTest }) {
  return (
    <div className={`test-result ${test.ok ? "ok" : "bad"}`}>
      <p role="status">
        <strong>{test.ok ? "All checks passed." : "Some checks failed — fix them and test again."}</strong>
      </p>
      <ul className="checks" aria-label="Connection checks">
        {test.checks.map((c, i) => {
          const missing = missingPermissions(c);
          return (
            <li key={`${c.name}-${i}`} className={c.ok ? "ok" : "bad"} data-testid="check">
              <span className="mark" aria-hidden="true">{c.ok ? "✓" : "✗"}</span>
              <span className="sr-only">{c.ok ? "passed" : "failed"}:</span> <strong>{c.name}</strong>
              {(c.message ?? c.detail) && <span> — {c.message ?? c.detail}</span>}
              {!c.ok && missing.length > 0 && (
                <div>
                  Missing permission{missing.length > 1 ? "s" : ""}:{" "}
                  {missing.map((p) => <code key={p} className="perm">{p}</code>)}
                </div>
              )}
              {!c.ok && c.fix && <div className="fix">How to fix: {c.fix}</div>}
            </li>
          );
        })}
      </ul>
    </div>
  );
}
