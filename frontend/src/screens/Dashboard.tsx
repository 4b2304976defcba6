import type { CmkApi } from "../api/client";
import { ErrorMessage, Loading, Section, StateBadge } from "../components/common";
import { OpsChart } from "../components/OpsChart";
import { formatTime } from "../lib/format";
import { navigate, tenantPath } from "../lib/router";
import { useAsync } from "../lib/useAsync";

const MODE_LABEL: Record<string, string> = {
  "platform-managed": "Platform-managed",
  byok: "Bring your own key (BYOK)",
  hyok: "Hold your own key (HYOK)",
};

export function Dashboard({ api, tenant }: { api: CmkApi; tenant: string }) {
  const { data, error, loading, reload } = useAsync(() => api.dashboard(tenant), [api, tenant]);
  if (loading && !data) return <Loading label="Loading the dashboard…" />;
  if (error) return <ErrorMessage error={error} />;
  if (!data) return null;
  const mk = data.master_key;
  return (
    <div className="grid">
      <Section title="Tenant" actions={<button type="button" onClick={reload}>Refresh</button>}>
        <dl className="facts">
          <dt>Tenant id</dt>
          <dd><code>{data.tenant_id}</code></dd>
          <dt>Status</dt>
          <dd><StateBadge state={data.status} /></dd>
          <dt>Region</dt>
          <dd>{data.region ?? "—"}</dd>
          <dt>Tenant isolation</dt>
          <dd>{data.isolation ? <><StateBadge state={data.isolation.status} /> {data.isolation.detail}</> : "—"}</dd>
          <dt>Service integration</dt>
          <dd>{data.integration ? <><StateBadge state={data.integration.status} /> {data.integration.detail}</> : "—"}</dd>
        </dl>
      </Section>
      <Section
        title="Master key"
        actions={<button type="button" onClick={() => navigate(tenantPath(tenant, "master-key"))}>Configure</button>}
      >
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
          {data.l2_versions !== undefined && (
            <>
              <dt>Tenant key versions</dt>
              <dd>{data.l2_versions}</dd>
            </>
          )}
        </dl>
      </Section>
      <Section title="Services connected">
        {data.services.length === 0 ? (
          <p className="muted">No KMIP client has connected yet. See Services for the integration guide.</p>
        ) : (
          <table>
            <thead>
              <tr><th scope="col">Service</th><th scope="col">Last seen</th></tr>
            </thead>
            <tbody>
              {data.services.map((s) => (
                <tr key={s.service_id}>
                  <td>{s.name ?? s.service_id}</td>
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
