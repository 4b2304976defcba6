import { useEffect, useState } from "react";
import type { CmkApi } from "../api/client";
import type { Notification } from "../api/types";

const SEEN = "openkcm.notifications.dismissed";

function level(kind: string): "info" | "warning" | "error" {
  if (/fail|error|security|revok|disabled|shred/i.test(kind)) return "error";
  if (/warn|expir|pending/i.test(kind)) return "warning";
  return "info";
}

/**
 * Provisioning notifications (the outbox the provisioning flow writes and publishes to SNS), as a
 * banner. Polls every 30 s while the tab is open; a failed poll stays quiet (an auditor-less role
 * may not read notifications, and the screens show the API errors that matter to them).
 */
export function NotificationBanner({ api, account, intervalMs = 30000 }: { api: CmkApi; account: string; intervalMs?: number }) {
  const [items, setItems] = useState<Notification[]>([]);
  const [dismissed, setDismissed] = useState<string[]>(() => JSON.parse(sessionStorage.getItem(SEEN) ?? "[]"));
  useEffect(() => {
    let alive = true;
    const poll = () =>
      api.notifications(account).then(
        (page) => alive && setItems(page.items ?? []),
        () => undefined,
      );
    poll();
    const timer = window.setInterval(poll, intervalMs);
    return () => {
      alive = false;
      window.clearInterval(timer);
    };
  }, [api, account, intervalMs]);
  const id = (n: Notification) => `${n.tenant_id}|${n.time}|${n.kind}`;
  const visible = items.filter((n) => !dismissed.includes(id(n))).slice(0, 3);
  if (!visible.length) return null;
  const dismiss = (n: Notification) => {
    const next = [...dismissed, id(n)];
    setDismissed(next);
    sessionStorage.setItem(SEEN, JSON.stringify(next.slice(-200)));
  };
  return (
    <div className="banners" aria-label="Notifications">
      {visible.map((n) => (
        <div key={id(n)} className={`banner ${level(n.kind)}`} role={level(n.kind) === "error" ? "alert" : "status"} data-testid="notification">
          <span>
            <strong>{n.subject}</strong>{n.message.startsWith(n.subject) ? n.message.slice(n.subject.length).replace(/^[!.:,]?\s*/, " ") : ` ${n.message}`}
          </span>
          <button type="button" className="link" onClick={() => dismiss(n)} aria-label={`Dismiss: ${n.subject}`}>
            Dismiss
          </button>
        </div>
      ))}
    </div>
  );
}
