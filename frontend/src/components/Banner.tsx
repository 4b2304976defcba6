import { useEffect, useState } from "react";
import type { CmkApi } from "../api/client";
import type { Notification } from "../api/types";

/**
 * Provisioning notifications (outbox / SNS events relayed by the API) as a dismissible banner.
 * Polls every 30 s; a failed poll is silent (the screens show API errors where they matter).
 */
export function NotificationBanner({ api, intervalMs = 30000 }: { api: CmkApi; intervalMs?: number }) {
  const [items, setItems] = useState<Notification[]>([]);
  const [dismissed, setDismissed] = useState<Set<string>>(new Set());
  useEffect(() => {
    let alive = true;
    const poll = () =>
      api.notifications().then(
        (page) => alive && setItems(page.items ?? []),
        () => undefined,
      );
    poll();
    const timer = window.setInterval(poll, intervalMs);
    return () => {
      alive = false;
      window.clearInterval(timer);
    };
  }, [api, intervalMs]);
  const visible = items.filter((n) => !dismissed.has(n.id));
  if (!visible.length) return null;
  return (
    <div className="banners" aria-live="polite">
      {visible.map((n) => (
        <div key={n.id} className={`banner ${n.level}`} role={n.level === "error" ? "alert" : "status"}>
          <span>{n.message}</span>
          <button type="button" className="link" onClick={() => setDismissed(new Set(dismissed).add(n.id))} aria-label={`Dismiss: ${n.message}`}>
            Dismiss
          </button>
        </div>
      ))}
    </div>
  );
}
