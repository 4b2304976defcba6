import { useState } from "react";
import type { CmkApi } from "../api/client";
import type { Tenant } from "../api/types";
import { ErrorMessage, Loading, Progress, Section, StateBadge } from "../components/common";
import { formatTime } from "../lib/format";
import { useAction, useAsync } from "../lib/useAsync";

export function Keys({ api, tenant, tenants }: { api: CmkApi; tenant: string; tenants: Tenant[] }) {
  return (
    <div className="grid">
      <L1Keys api={api} tenants={tenants} />
      <TenantKeys api={api} tenant={tenant} />
      <ManagedObjects api={api} tenant={tenant} />
    </div>
  );
}

function L1Keys({ api, tenants }: { api: CmkApi; tenants: Tenant[] }) {
  const keys = useAsync(() => api.listL1Keys(), [api]);
  const action = useAction();
  const [target, setTarget] = useState<Record<string, string>>({});
  const assign = async (l1: string) => {
    const t = target[l1];
    if (!t) return;
    if (await action.run(() => api.assignL1Key(l1, t))) keys.reload();
  };
  const unassign = async (l1: string, t: string) => {
    if (await action.run(() => api.unassignL1Key(l1, t))) keys.reload();
  };
  return (
    <Section title="Master keys (L1)">
      {keys.loading && !keys.data && <Loading />}
      <ErrorMessage error={keys.error} />
      {keys.data && keys.data.items.length === 0 && <p className="muted">No master key is linked. Use Master key to link one.</p>}
      {keys.data && keys.data.items.length > 0 && (
        <table>
          <thead>
            <tr><th scope="col">Key</th><th scope="col">State</th><th scope="col">Tenants</th><th scope="col">Assign</th></tr>
          </thead>
          <tbody>
            {keys.data.items.map((k) => {
              const free = tenants.filter((t) => !k.tenants.includes(t.tenant_id));
              return (
                <tr key={k.l1_id}>
                  <td><code className="wrap">{k.key_ref}</code></td>
                  <td>{k.state ? <StateBadge state={k.state} /> : "—"}</td>
                  <td>
                    <ul className="plain">
                      {k.tenants.map((t) => (
                        <li key={t}>
                          {t}{" "}
                          <button type="button" className="link" onClick={() => unassign(k.l1_id, t)} disabled={action.busy} aria-label={`Unassign ${t} from ${k.key_ref}`}>
                            unassign
                          </button>
                        </li>
                      ))}
                    </ul>
                  </td>
                  <td>
                    {free.length > 0 ? (
                      <div className="inline">
                        <label className="sr-only" htmlFor={`assign-${k.l1_id}`}>Tenant to assign {k.key_ref} to</label>
                        <select id={`assign-${k.l1_id}`} value={target[k.l1_id] ?? ""} onChange={(e) => setTarget({ ...target, [k.l1_id]: e.target.value })}>
                          <option value="">Choose a tenant…</option>
                          {free.map((t) => (
                            <option key={t.tenant_id} value={t.tenant_id}>{t.name ?? t.tenant_id}</option>
                          ))}
                        </select>
                        <button type="button" onClick={() => assign(k.l1_id)} disabled={action.busy || !target[k.l1_id]}>Assign</button>
                      </div>
                    ) : (
                      <span className="muted">all tenants</span>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <ErrorMessage error={action.error} />
    </Section>
  );
}

function TenantKeys({ api, tenant }: { api: CmkApi; tenant: string }) {
  const versions = useAsync(() => api.l2Versions(tenant), [api, tenant]);
  const policy = useAsync(() => api.rotationPolicy(tenant), [api, tenant]);
  const rotate = useAction();
  const save = useAction();
  const [period, setPeriod] = useState("");
  const [saved, setSaved] = useState(false);
  const [rotated, setRotated] = useState(false);
  const doRotate = async () => {
    setRotated(false);
    if ((await rotate.run(() => api.rotate(tenant))) !== undefined) {
      setRotated(true);
      versions.reload();
    }
  };
  const doSave = async () => {
    setSaved(false);
    const days = Number(period);
    if (await save.run(async () => {
      if (!Number.isInteger(days) || days < 1 || days > 3650) throw new Error("The rotation period is a whole number of days between 1 and 3650.");
      return api.setRotationPolicy(tenant, days);
    })) {
      setSaved(true);
      policy.reload();
    }
  };
  const current = versions.data?.items.reduce((m, v) => Math.max(m, v.version), 0);
  return (
    <Section
      title="Tenant key (L2)"
      actions={
        <button type="button" className="primary" onClick={doRotate} disabled={rotate.busy}>
          {rotate.busy ? "Rotating…" : "Rotate now"}
        </button>
      }
    >
      {rotate.busy && <Progress label="Rotating the tenant key" />}
      {rotated && <p role="status" className="ok-text">Rotated: version {current} is now current.</p>}
      <ErrorMessage error={rotate.error} />
      {versions.loading && !versions.data && <Loading />}
      <ErrorMessage error={versions.error} />
      {versions.data && (
        <table>
          <thead>
            <tr><th scope="col">Version</th><th scope="col">Created</th><th scope="col">State</th></tr>
          </thead>
          <tbody>
            {[...versions.data.items].sort((a, b) => b.version - a.version).map((v) => (
              <tr key={v.version} data-testid="l2-version">
                <td>{v.version}{v.version === current && " (current)"}</td>
                <td>{formatTime(v.created_at)}</td>
                <td>{v.state ? <StateBadge state={v.state} /> : "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>Rotation policy</h3>
      <ErrorMessage error={policy.error} />
      {policy.data && (
        <p>
          Rotates every <strong>{policy.data.period_days}</strong> days
          {policy.data.next_rotation && <>; next rotation {formatTime(policy.data.next_rotation)}</>}.
        </p>
      )}
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
      {page.data && page.data.items.length === 0 && <p className="muted">No managed objects yet. Objects appear when a service creates keys over KMIP.</p>}
      {page.data && page.data.items.length > 0 && (
        <table>
          <thead>
            <tr><th scope="col">Object</th><th scope="col">State</th><th scope="col">Algorithm</th><th scope="col">Created by</th><th scope="col">Last use</th></tr>
          </thead>
          <tbody>
            {page.data.items.map((o) => (
              <tr key={o.object_id}>
                <td><code>{o.name || o.object_id}</code></td>
                <td><StateBadge state={o.state} /></td>
                <td>{o.algorithm ?? "—"}</td>
                <td>{o.created_by ?? "—"}</td>
                <td>{formatTime(o.last_used)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <div className="pager">
        <button type="button" disabled={!history.length} onClick={() => { const h = [...history]; setToken(h.pop()); setHistory(h); }}>Previous</button>
        <button type="button" disabled={!page.data?.next_token} onClick={() => { setHistory([...history, token]); setToken(page.data?.next_token ?? undefined); }}>Next</button>
      </div>
    </Section>
  );
}
