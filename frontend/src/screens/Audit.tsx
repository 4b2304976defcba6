import { useState } from "react";
import type { CmkApi } from "../api/client";
import { AUDIT_KINDS } from "../api/types";
import type { AuditEvent } from "../api/types";
import { ErrorMessage, Loading, Progress, Section, StateBadge } from "../components/common";
import { download, formatTime } from "../lib/format";
import { useAction, useAsync } from "../lib/useAsync";

interface Filter {
  from: string;
  to: string;
  kind: string;
  order: "newest" | "oldest";
}

/** datetime-local value (no zone, the user's local time) -> ISO 8601 UTC, or undefined. */
export function toIso(local: string): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

export function Audit({ api, tenant, pageSize = 25 }: { api: CmkApi; tenant: string; pageSize?: number }) {
  // Newest first: a person opening the audit log wants what just happened, not the tenant's first day.
  const [draft, setDraft] = useState<Filter>({ from: "", to: "", kind: "", order: "newest" });
  const [filter, setFilter] = useState<Filter>(draft);
  const [token, setToken] = useState<string>();
  const [history, setHistory] = useState<(string | undefined)[]>([]);
  const page = useAsync(
    () => api.audit(tenant, { since: toIso(filter.from), until: toIso(filter.to), kind: filter.kind || undefined, nextToken: token, limit: pageSize, order: filter.order }),
    [api, tenant, filter, token, pageSize],
  );
  const exporter = useAction();
  const apply = () => {
    setFilter(draft);
    setToken(undefined);
    setHistory([]);
  };
  const doExport = async () => {
    const text = await exporter.run(() => api.auditExport(tenant, { since: toIso(filter.from), until: toIso(filter.to), kind: filter.kind || undefined }));
    if (text !== undefined) download(`audit-${tenant}.jsonl`, text, "application/x-ndjson");
  };
  return (
    <Section
      title="Audit log"
      actions={
        <span className="inline">
          <button type="button" onClick={page.reload} disabled={page.loading}>Refresh</button>
          <button type="button" onClick={doExport} disabled={exporter.busy}>{exporter.busy ? "Exporting…" : "Export (JSON lines)"}</button>
        </span>
      }
    >
      <form className="filters" onSubmit={(e) => { e.preventDefault(); apply(); }}>
        <div className="field">
          <label htmlFor="audit-from">From</label>
          <input id="audit-from" type="datetime-local" value={draft.from} onChange={(e) => setDraft({ ...draft, from: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="audit-to">To</label>
          <input id="audit-to" type="datetime-local" value={draft.to} onChange={(e) => setDraft({ ...draft, to: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="audit-kind">Kind</label>
          <select id="audit-kind" value={draft.kind} onChange={(e) => setDraft({ ...draft, kind: e.target.value })}>
            <option value="">All kinds</option>
            {AUDIT_KINDS.map((k) => <option key={k} value={k}>{k}</option>)}
          </select>
        </div>
        <div className="field">
          <label htmlFor="audit-order">Order</label>
          <select id="audit-order" value={draft.order} onChange={(e) => setDraft({ ...draft, order: e.target.value === "oldest" ? "oldest" : "newest" })}>
            <option value="newest">Newest first</option>
            <option value="oldest">Oldest first</option>
          </select>
        </div>
        <button type="submit" className="primary">Apply filter</button>
      </form>
      {exporter.busy && <Progress label="Exporting audit events" />}
      <ErrorMessage error={exporter.error} />
      {page.loading && <Loading label="Loading audit events…" />}
      <ErrorMessage error={page.error} />
      {page.data && page.data.items.length === 0 && <p className="muted">No audit events match this filter.</p>}
      {page.data && page.data.items.length > 0 && (
        <table className="audit">
          <thead>
            <tr><th scope="col">Time</th><th scope="col">Kind</th><th scope="col">Operation</th><th scope="col">Actor</th><th scope="col">Result</th><th scope="col">Detail</th></tr>
          </thead>
          <tbody>
            {page.data.items.map((e) => (
              <tr key={e.event_id} data-testid="audit-row">
                <td>{formatTime(e.time)}</td>
                <td>{e.kind}</td>
                <td><code>{e.operation}</code></td>
                <td>{e.actor || "—"}{e.actor_role && <span className="muted"> ({e.actor_role})</span>}</td>
                <td><StateBadge state={e.result ?? "—"} /></td>
                <td className="wrap small">{describeEvent(e)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <nav className="pager" aria-label="Audit pages">
        <button type="button" disabled={!history.length} onClick={() => { const h = [...history]; setToken(h.pop()); setHistory(h); }}>Previous page</button>
        <button type="button" disabled={!page.data?.next_token} onClick={() => { setHistory([...history, token]); setToken(page.data?.next_token ?? undefined); }}>Next page</button>
      </nav>
    </Section>
  );
}

export function describeEvent(e: AuditEvent): string {
  const parts: string[] = [];
  if (e.object_id) parts.push(`object ${e.object_id}`);
  if (e.l2_version) parts.push(`L2 v${e.l2_version}`);
  if (e.reason) parts.push(e.reason);
  for (const [k, v] of Object.entries(e.details ?? {})) parts.push(`${k}=${v}`);
  return parts.join("; ");
}
