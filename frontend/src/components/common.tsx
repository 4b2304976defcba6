import type { ReactNode } from "react";
import { ApiError } from "../api/client";

export function ErrorMessage({ error }: { error?: Error }) {
  if (!error) return null;
  const status = error instanceof ApiError && error.status ? ` (HTTP ${error.status})` : "";
  return (
    <div className="error" role="alert">
      <strong>Error{status}:</strong> {error.message}
    </div>
  );
}

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <p className="loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" /> {label}
    </p>
  );
}

/** Determinate when `total` is known, indeterminate otherwise. */
export function Progress({ label, done, total }: { label: string; done?: number; total?: number }) {
  const known = typeof done === "number" && typeof total === "number" && total > 0;
  const pct = known ? Math.round((100 * done) / total) : undefined;
  return (
    <div className="progress" role="status" aria-live="polite">
      <div
        className={`bar${known ? "" : " indeterminate"}`}
        role="progressbar"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={pct}
      >
        <div className="fill" style={known ? { width: `${pct}%` } : undefined} />
      </div>
      <span>
        {label}
        {known ? ` — ${done} of ${total} (${pct}%)` : "…"}
      </span>
    </div>
  );
}

export function StateBadge({ state }: { state: string }) {
  const cls = /^(active|ok|healthy|connected|enforced|succeeded|success|enabled|ready|current)$/i.test(state)
    ? "ok"
    : /error|fail|disabled|revoked|rolled|denied|deleted|destroyed|not connected/i.test(state)
      ? "bad"
      : "neutral";
  return <span className={`badge ${cls}`}>{state}</span>;
}

export function Section({ title, children, actions, wide }: { title: string; children: ReactNode; actions?: ReactNode; wide?: boolean }) {
  const id = `h-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return (
    <section className={wide ? "card wide" : "card"} aria-labelledby={id}>
      <header className="card-head">
        <h2 id={id}>{title}</h2>
        {actions}
      </header>
      {children}
    </section>
  );
}
