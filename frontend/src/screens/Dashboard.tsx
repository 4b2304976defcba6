import type { CmkApi } from "../api/client";
import type { Dashboard as DashboardData } from "../api/types";
import { ErrorMessage, Loading, Section, StateBadge } from "../components/common";
import { OpsChart } from "../components/OpsChart";
import { formatTime } from "../lib/format";
import { navigate, tenantPath } from "../lib/router";
import { useAsync } from "../lib/useAsync";

export const MODE_LABEL: Record<string, string> = {
  "platform-managed": "Platform-managed",
  byok: "Bring your own key (BYOK)",
  hyok: "Hold your own key (HYOK)",
};

/** Isolation and integration as the dashboard states them, derived from what the API reports. */
export function isolationOf(d: DashboardData): { status: string; detail: string } {
  const usable = /^(ready|active)$/i.test(d.status);
  return usable
    ? { status: "Enforced", detail: "Own tenant key (L2), tenant-id partition keys, tenant-bound client certificates." }
    : { status: d.status, detail: d.tenant.status_reason ?? "Key operations of this tenant are refused." };
}

export function integrationOf(d: DashboardData): { status: string; detail: string } {
  const seen = d.services.filter((s) => s.last_seen);
  if (!seen.length) return { status: "Not connected", detail: "No KMIP client has connected yet." };
  return { status: "Connected", detail: `${seen.length} service${seen.length > 1 ? "s" : ""} seen over KMIP.` };
}

export function Dashboard({ api, tenant }: { api: CmkApi; tenant: string }) {
  const { data, error, loading, reload } = useAsync(() => api.dashboard(tenant), [api, tenant]);
  if (loading && !data) return <Loading label="Loading the dashboard…" />;
  if (error) return <ErrorMessage error={error} />;
  if (!data) return null;
  const mk = data.master_key;
  const iso = isolationOf(data);
  const integ = integrationOf(data);
  const current = data.l2_versions.find((v) => v.current);
  return (
    <div className="grid">
      <Section title="Tenant" actions={<button type="button" onClick={reload}>Refresh</button>}>
        <dl className="facts">
          <dt>Tenant</dt>
          <dd><code>{data.tenant.tenant_id}</code>{data.tenant.name && ` — ${data.tenant.name}`}</dd>
          <dt>Status</dt>
          <dd data-testid="tenant-status"><StateBadge state={data.status} />{data.tenant.status_reason && <span className="muted"> {data.tenant.status_reason}</span>}</dd>
          <dt>Region</dt>
          <dd>{data.region || "—"}</dd>
          <dt>Tenant isolation</dt>
          <dd><StateBadge state={iso.status} /> <span className="muted">{iso.detail}</span></dd>
          <dt>Service integration</dt>
          <dd><StateBadge state={integ.status} /> <span className="muted">{integ.detail}</span></dd>
        </dl>
      </Section>
      <Section title="Master key" actions={<button type="button" onClick={() => navigate(tenantPath(tenant, "master-key"))}>Configure</button>}>
        <dl className="facts">
          <dt>Mode</dt>
          <dd data-testid="master-key-mode">{MODE_LABEL[mk.mode] ?? mk.mode}</dd>
          <dt>State</dt>
          <dd data-testid="master-key-state"><StateBadge state={mk.state} /></dd>
          {mk.reason && (
            <>
              <dt>Reason</dt>
              <dd className="reason">{mk.reason}</dd>
            </>
          )}
          <dt>Tenant key (L2)</dt>
          <dd>
            {current ? `version ${current.version} current` : "—"}, {data.l2_versions.length} retained
          </dd>
        </dl>
      </Section>
      <Section title="Services connected">
        {data.services.length === 0 ? (
          <p className="muted">No KMIP client has connected yet. See Services & certificates for the integration guide.</p>
        ) : (
          <table>
            <thead>
              <tr><th scope="col">Service</th><th scope="col">Operations (30 days)</th><th scope="col">Last seen</th></tr>
            </thead>
            <tbody>
              {data.services.map((s) => (
                <tr key={s.service_id}>
                  <td>{s.service_id}</td>
                  <td>{s.operations ?? "—"}</td>
                  <td>{formatTime(s.last_seen)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Key operations per day">
        <OpsChart data={data.operations_per_day} />
      </Section>
    </div>
  );
}
