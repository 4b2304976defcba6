import { useState } from "react";
import type { CmkApi } from "../api/client";
import type { Keystore, Page, Tenant } from "../api/types";
import { ErrorMessage, Loading, Progress, Section, StateBadge } from "../components/common";
import { formatTime } from "../lib/format";
import { useAction, useAsync, type AsyncState } from "../lib/useAsync";
import { MODE_LABEL, describeStepList } from "./keysHelpers";
import { RolledBack, tenantFailures, type TenantFailure } from "./MasterKeyWizard";
import { KeyImport } from "./KeyImport";

export function Keys({ api, account, tenant, tenants, onChanged }: { api: CmkApi; account: string; tenant: string; tenants: Tenant[]; onChanged: () => void }) {
  return (
    <div className="grid">
      <MasterKeys api={api} account={account} tenants={tenants} onChanged={onChanged} />
      <TenantKeys api={api} tenant={tenant} />
      <ManagedObjects api={api} tenant={tenant} />
    </div>
  );
}

/** "l1:<keystore>/<key ref>" (the parent reference the keystores feature stores) -> its parts. */
export function splitL1Ref(ref: string): { keystore?: string; keyRef: string } {
  const m = /^l1:([^/]+)\/(.+)$/.exec(ref);
  return m ? { keystore: m[1], keyRef: m[2] } : { keyRef: ref };
}

/** L1 keys of the account, grouped by key reference, with the tenants each one protects. */
export function groupByL1(tenants: Tenant[]): { key: string; mode: string; tenants: Tenant[] }[] {
  const groups = new Map<string, { key: string; mode: string; tenants: Tenant[] }>();
  for (const t of tenants) {
    const key = t.key_mode === "platform-managed" ? "platform root key" : t.l1_key_ref || `master key linked to ${t.tenant_id}`;
    const g = groups.get(key) ?? { key, mode: t.key_mode, tenants: [] };
    g.tenants.push(t);
    groups.set(key, g);
  }
  return [...groups.values()].sort((a, b) => (a.mode === "platform-managed" ? 1 : 0) - (b.mode === "platform-managed" ? 1 : 0));
}

function MasterKeys({ api, account, tenants, onChanged }: { api: CmkApi; account: string; tenants: Tenant[]; onChanged: () => void }) {
  const stores = useAsync(() => api.listKeystores(account), [api, account]);
  return (
    <>
      <Assignments api={api} account={account} tenants={tenants} onChanged={onChanged} stores={stores} />
      {stores.data && <KeyImport api={api} account={account} stores={stores.data.items} onImported={() => stores.reload()} />}
    </>
  );
}

function Assignments({ api, account, tenants, onChanged, stores }: {
  api: CmkApi; account: string; tenants: Tenant[]; onChanged: () => void; stores: AsyncState<Page<Keystore>>;
}) {
  const action = useAction();
  const [storeId, setStoreId] = useState("");
  const [keyRef, setKeyRef] = useState("");
  const [target, setTarget] = useState("");
  const [steps, setSteps] = useState<string[]>();
  const [confirm, setConfirm] = useState<string>();
  const [failures, setFailures] = useState<TenantFailure[]>([]);
  const knownRefs = [...new Set(tenants.map((t) => t.l1_key_ref).filter((r): r is string => !!r))];

  const assign = async () => {
    setSteps(undefined);
    setFailures([]);
    const reply = await action.run(async () => {
      if (!storeId || !keyRef.trim() || !target) throw new Error("Choose a keystore, a key and a tenant.");
      return api.linkL1Key(account, storeId, keyRef.trim(), [target]);
    });
    if (reply) {
      setSteps(describeStepList(reply.progress));
      setFailures(tenantFailures(reply.result));
    }
    onChanged();
  };
  const unassign = async (tenantId: string) => {
    setConfirm(undefined);
    setSteps(undefined);
    setFailures([]);
    const reply = await action.run(() => api.returnToPlatform(tenantId));
    if (reply) {
      setSteps(describeStepList(reply.progress));
      setFailures(tenantFailures(reply.result));
    }
    onChanged();
  };

  return (
    <Section title="Master keys (L1) and assignments">
      <table>
        <thead>
          <tr><th scope="col">Master key</th><th scope="col">Tenants</th></tr>
        </thead>
        <tbody>
          {groupByL1(tenants).map((g) => (
            <tr key={g.key} data-testid="l1-row">
              <td>
                <code className="wrap">{splitL1Ref(g.key).keyRef}</code>
                <div className="muted small">
                  {MODE_LABEL[g.mode] ?? g.mode}
                  {splitL1Ref(g.key).keystore && <> · keystore {splitL1Ref(g.key).keystore}</>}
                </div>
              </td>
              <td>
                <ul className="plain">
                  {g.tenants.map((t) => (
                    <li key={t.tenant_id}>
                      {t.tenant_id} <StateBadge state={t.l1_state} />
                      {t.key_mode !== "platform-managed" && confirm !== t.tenant_id && (
                        <button type="button" className="link" onClick={() => setConfirm(t.tenant_id)} disabled={action.busy} aria-label={`Unassign the master key of ${t.tenant_id}`}>
                          unassign
                        </button>
                      )}
                      {confirm === t.tenant_id && (
                        <span className="inline">
                          <span>Return {t.tenant_id} to platform-managed keys?</span>
                          <button type="button" className="danger" onClick={() => unassign(t.tenant_id)} autoFocus>Unassign</button>
                          <button type="button" onClick={() => setConfirm(undefined)}>Cancel</button>
                        </span>
                      )}
                    </li>
                  ))}
                </ul>
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      <h3>Assign a master key to a tenant</h3>
      <ErrorMessage error={stores.error} />
      {stores.loading && !stores.data && <Loading label="Loading keystores…" />}
      {stores.data && stores.data.items.length === 0 && <p className="muted">No keystore yet: create one with the Master key wizard.</p>}
      {stores.data && stores.data.items.length > 0 && (
        <form className="filters" onSubmit={(e) => { e.preventDefault(); assign(); }}>
          <div className="field">
            <label htmlFor="assign-store">Keystore</label>
            <select id="assign-store" value={storeId} onChange={(e) => setStoreId(e.target.value)}>
              <option value="">Choose…</option>
              {stores.data.items.map((s) => (
                <option key={s.keystore_id} value={s.keystore_id}>{s.name || s.keystore_id} ({s.provider})</option>
              ))}
            </select>
          </div>
          <div className="field">
            <label htmlFor="assign-key">Key reference</label>
            <input id="assign-key" list="known-l1" value={keyRef} onChange={(e) => setKeyRef(e.target.value)} size={40} placeholder="ARN, key name or label" autoComplete="off" />
            <datalist id="known-l1">{knownRefs.map((r) => <option key={r} value={r} />)}</datalist>
          </div>
          <div className="field">
            <label htmlFor="assign-tenant">Tenant</label>
            <select id="assign-tenant" value={target} onChange={(e) => setTarget(e.target.value)}>
              <option value="">Choose…</option>
              {tenants.map((t) => <option key={t.tenant_id} value={t.tenant_id}>{t.name ? `${t.name} (${t.tenant_id})` : t.tenant_id}</option>)}
            </select>
          </div>
          <button type="submit" className="primary" disabled={action.busy}>{action.busy ? "Assigning…" : "Assign & activate"}</button>
        </form>
      )}
      {action.busy && <Progress label="Re-wrapping the tenant's key versions under the new master key" />}
      {steps && (
        <div role="status">
          {failures.length === 0 && <p className="ok-text">Done.</p>}
          {steps.length > 0 && <ol className="progress-steps" aria-label="Progress">{steps.map((s, i) => <li key={i}>{s}</li>)}</ol>}
        </div>
      )}
      <RolledBack failures={failures} />
      <ErrorMessage error={action.error} />
    </Section>
  );
}

function TenantKeys({ api, tenant }: { api: CmkApi; tenant: string }) {
  const dash = useAsync(() => api.dashboard(tenant), [api, tenant]);
  const policy = useAsync(() => api.rotationPolicy(tenant), [api, tenant]);
  const rotate = useAction();
  const save = useAction();
  const [period, setPeriod] = useState("");
  const [saved, setSaved] = useState(false);
  const [rotated, setRotated] = useState<number>();
  const doRotate = async () => {
    setRotated(undefined);
    const reply = await rotate.run(() => api.rotate(tenant));
    if (reply) {
      setRotated(reply.current_l2_version);
      dash.reload();
    }
  };
  const doSave = async () => {
    setSaved(false);
    const days = Number(period);
    const reply = await save.run(async () => {
      if (!Number.isInteger(days) || days < 1 || days > 3650) throw new Error("The rotation period is a whole number of days between 1 and 3650.");
      return api.setRotationPolicy(tenant, days);
    });
    if (reply) {
      setSaved(true);
      setPeriod("");
      policy.reload();
    }
  };
  const versions = [...(dash.data?.l2_versions ?? [])].sort((a, b) => b.version - a.version);
  return (
    <Section
      title="Tenant key (L2)"
      actions={<button type="button" className="primary" onClick={doRotate} disabled={rotate.busy}>{rotate.busy ? "Rotating…" : "Rotate now"}</button>}
    >
      {rotate.busy && <Progress label="Rotating the tenant key" />}
      {rotated !== undefined && <p role="status" className="ok-text">Rotated: version {rotated} is now current.</p>}
      <ErrorMessage error={rotate.error} />
      {dash.loading && !dash.data && <Loading />}
      <ErrorMessage error={dash.error} />
      {dash.data && (
        <table>
          <thead>
            <tr><th scope="col">Version</th><th scope="col">Created</th><th scope="col">State</th><th scope="col">Wrapped by</th></tr>
          </thead>
          <tbody>
            {versions.map((v) => (
              <tr key={v.version} data-testid="l2-version">
                <td>{v.version}{v.current && <strong> (current)</strong>}</td>
                <td>{formatTime(v.created_at)}</td>
                <td><StateBadge state={v.state} /></td>
                <td>{v.parent ?? "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>Rotation policy</h3>
      <ErrorMessage error={policy.error} />
      {policy.data && <p data-testid="rotation-policy">Rotates every <strong>{policy.data.rotation_period_days}</strong> days.</p>}
      <form className="inline" onSubmit={(e) => { e.preventDefault(); doSave(); }}>
        <label htmlFor="period">New period (days)</label>
        <input id="period" inputMode="numeric" value={period} onChange={(e) => setPeriod(e.target.value)} size={6} />
        <button type="submit" disabled={save.busy || !period}>Save policy</button>
      </form>
      {saved && <p role="status" className="ok-text">Rotation policy saved.</p>}
      <ErrorMessage error={save.error} />
    </Section>
  );
}

function ManagedObjects({ api, tenant }: { api: CmkApi; tenant: string }) {
  const [token, setToken] = useState<string | undefined>();
  const [history, setHistory] = useState<(string | undefined)[]>([]);
  const page = useAsync(() => api.objects(tenant, token), [api, tenant, token]);
  return (
    <Section title="Managed objects">
      {page.loading && !page.data && <Loading />}
      <ErrorMessage error={page.error} />
      {page.data && page.data.items.length === 0 && <p className="muted">No managed objects yet. They appear when a service creates keys over KMIP.</p>}
      {page.data && page.data.items.length > 0 && (
        <table>
          <thead>
            <tr><th scope="col">Object</th><th scope="col">Type</th><th scope="col">State</th><th scope="col">Algorithm</th><th scope="col">Created by</th><th scope="col">Last use</th></tr>
          </thead>
          <tbody>
            {page.data.items.map((o) => (
              <tr key={o.object_id}>
                <td><code className="wrap">{o.names?.[0] || o.object_id}</code></td>
                <td>{o.object_type ?? "—"}</td>
                <td><StateBadge state={o.state} /></td>
                <td>{o.algorithm ?? "—"}{o.length ? ` ${o.length}` : ""}</td>
                <td>{o.created_by ?? "—"}</td>
                <td>{formatTime(o.last_used_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <nav className="pager" aria-label="Managed object pages">
        <button type="button" disabled={!history.length} onClick={() => { const h = [...history]; setToken(h.pop()); setHistory(h); }}>Previous</button>
        <button type="button" disabled={!page.data?.next_token} onClick={() => { setHistory([...history, token]); setToken(page.data?.next_token ?? undefined); }}>Next</button>
      </nav>
    </Section>
  );
}
