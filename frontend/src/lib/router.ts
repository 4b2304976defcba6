/** A tiny history-API router: the app has a handful of flat routes, so no router library. */
import { useEffect, useState } from "react";

export type Route =
  | { name: "home" }
  | { name: "login" }
  | { name: "callback" }
  | { name: "tenant"; tenant: string; tab: TenantTab }
  | { name: "not-found"; path: string };

export const TABS = ["dashboard", "master-key", "keys", "services", "audit"] as const;
export type TenantTab = (typeof TABS)[number];

export function parseRoute(pathname: string): Route {
  const path = pathname.replace(/\/+$/, "") || "/";
  if (path === "/") return { name: "home" };
  if (path === "/login") return { name: "login" };
  if (path === "/callback") return { name: "callback" };
  // /tenant/<id> is the link that provisioning notifications (e-mail, SNS) carry.
  const m = /^\/tenants?\/([^/]+)(?:\/([a-z-]+))?$/.exec(path);
  if (m) {
    const tab = (m[2] ?? "dashboard") as TenantTab;
    if ((TABS as readonly string[]).includes(tab)) return { name: "tenant", tenant: decodeURIComponent(m[1]), tab };
  }
  return { name: "not-found", path };
}

export function tenantPath(tenant: string, tab: TenantTab = "dashboard"): string {
  return `/tenants/${encodeURIComponent(tenant)}/${tab}`;
}

const listeners = new Set<() => void>();

export function navigate(to: string, replace = false): void {
  if (replace) window.history.replaceState(null, "", to);
  else window.history.pushState(null, "", to);
  listeners.forEach((l) => l());
}

export function useLocation(): { pathname: string; search: string } {
  const [loc, setLoc] = useState({ pathname: window.location.pathname, search: window.location.search });
  useEffect(() => {
    const update = () => setLoc({ pathname: window.location.pathname, search: window.location.search });
    listeners.add(update);
    window.addEventListener("popstate", update);
    return () => {
      listeners.delete(update);
      window.removeEventListener("popstate", update);
    };
  }, []);
  return loc;
}
