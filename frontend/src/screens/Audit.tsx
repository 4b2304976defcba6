import { useState } from "react";
import type { CmkApi } from "../api/client";
import { ErrorMessage, Loading, Progress, Section } from "../components/common";
import { download, formatTime } from "../lib/format";
import { useAction, useAsync } from "../lib/useAsync";

interface Filter {
  from: string;
  to: string;
  kind: string;
}

/** datetime-local value (no zone, the user's local time) -> ISO 8601 UTC, or undefined. */
export function toIso(local: string): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

export function Audit({ api, tenant, pageSize = 25 }: { api: CmkApi; tenant: string; pageSize?: number }) {
  const [draft, setDraft] = useState<Filter>({ from: "", to: "", kind: "" });
  const [filter, setFilter] = useState<Filter>(draft);
  const [token, setToken] = useState<string>();
  const [history, setHistory] = useState<(string | undefined)[]>([]);
  const page = useAsync(
    () => api.audit(tenant, { from: toIso(filter.from), to: toIso(filter.to), kind: filter.kind || undefined, nextToken: token, limit: pageSize }),
    [api, tenant, filter, token, pageSize],
  );
  const exporter = useAction();
  const apply = () => {
    setFilter(draft);
    setToken(undefined);
    setHistory([]);
  };
  const doExport = async () => {
    const text = await exporter.run(() => api.auditExport(tenant, { from: toIso(filter.from), to: toIso(filter.to), kind: filter.kind || undefined }));
    if (text !== undefined) download(`audit-${tenant}.jsonl`, text, "application/x-ndjson");
  };
  return (
    <Section
      title="Audit log"
      actions={<button type="button" onClick={doExport} disabled={exporter.busy}>{exporter.busy ? "Exporting…" : "Export (JSON lines)"}</button>}
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
          <input id="audit-kind" value={draft.kind} onChange={(e) => setDraft({ ...draft, kind: e.target.value })} placeholder="e.g. key_rotation" />
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
            <tr><th scope="col">Time</th><th scope="col">Kind</th><th scope="col">Actor</th><th scope="col">Outcome</th><th scope="col">Detail</th></tr>
          </thead>
          <tbody>
            {page.data.items.map((e) => (
              <tr key={e.event_id} data-testid="audit-row">
                <td>{formatTime(e.time)}</td>
                <td><code>{e.kind}</code></td>
                <td>{e.actor ?? "—"}</td>
                <td>{e.outcome ?? "—"}</td>
                <td className="wrap">{typeof e.detail === "string" ? e.detail : e.detail ? JSON.stringify(e.detail) : ""}</td>
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
