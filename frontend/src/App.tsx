import { useEffect, useMemo, useState } from "react";
import { CmkApi } from "./api/client";
import { clearSession, getSession, type Session } from "./auth/session";
import { NotificationBanner } from "./components/Banner";
import { ErrorMessage, Loading } from "./components/common";
import type { UiConfig } from "./config";
import type { Tenant } from "./api/types";
import { navigate, parseRoute, TABS, tenantPath, useLocation, type TenantTab } from "./lib/router";
import { useAsync } from "./lib/useAsync";
import { Audit } from "./screens/Audit";
import { Dashboard } from "./screens/Dashboard";
import { Keys } from "./screens/Keys";
import { MasterKeyWizard } from "./screens/MasterKeyWizard";
import { Services } from "./screens/Services";
import { Callback, SignIn } from "./screens/SignIn";

const TAB_LABEL: Record<TenantTab, string> = {
  dashboard: "Dashboard",
  "master-key": "Master key",
  keys: "Keys",
  services: "Services & certificates",
  audit: "Audit log",
};

export function App({ config, api: injected, notifications = true }: { config: UiConfig; api?: CmkApi; notifications?: boolean }) {
  const loc = useLocation();
  const route = parseRoute(loc.pathname);
  const [session, setSession] = useState<Session | null>(() => getSession());
  const api = useMemo(
    () => injected ?? new CmkApi(config.apiBase, undefined, () => setSession(null)),
    [injected, config.apiBase],
  );

  if (route.name === "callback") return <Callback config={config} onSignedIn={() => setSession(getSession())} />;
  if (!session || route.name === "login") {
    const returnTo = route.name === "login" ? "/" : loc.pathname;
    return <SignIn config={config} returnTo={returnTo} />;
  }
  return <Shell api={api} session={session} route={route} notifications={notifications} kmipEndpoint={config.kmipEndpoint} onSignOut={() => { clearSession(); setSession(null); navigate("/login"); }} />;
}

function Shell({ api, session, route, notifications, kmipEndpoint, onSignOut }: {
  api: CmkApi; session: Session; route: ReturnType<typeof parseRoute>; notifications: boolean; kmipEndpoint: string; onSignOut: () => void;
}) {
  const current = route.name === "tenant" ? route.tenant : undefined;
  // A platform operator has no account of its own: it picks one.
  const [chosenAccount, setChosenAccount] = useState<string>();
  const accounts = useAsync(
    () => (session.claims.account ? Promise.resolve({ items: [{ account_id: session.claims.account }] }) : api.listAccounts()),
    [api, session.claims.account],
  );
  const account = session.claims.account ?? chosenAccount ?? accounts.data?.items[0]?.account_id;
  const tenants = useAsync(() => (account ? api.listTenants(account) : Promise.resolve({ items: [] })), [api, account]);
  const items = tenants.data?.items ?? [];

  // Land on the first tenant's dashboard.
  useEffect(() => {
    // only once the tenants of the current account are loaded (not the previous account's)
    if (route.name === "home" && !tenants.loading && items.length && items[0].account_id === account) {
      navigate(tenantPath(items[0].tenant_id), true);
    }
  }, [route.name, items, tenants.loading, account]);

  useEffect(() => {
    const tab = route.name === "tenant" ? TAB_LABEL[route.tab] : "Tenants";
    document.title = `${tab}${current ? ` · ${current}` : ""} · OpenKCM`;
  }, [route, current]);

  return (
    <>
      <a className="skip" href="#main">Skip to content</a>
      <header className="topbar">
        <span className="brand">OpenKCM</span>
        {!session.claims.account && (accounts.data?.items.length ?? 0) > 0 && (
          <div className="switcher">
            <label htmlFor="account-switcher">Account</label>
            <select id="account-switcher" value={account ?? ""} onChange={(e) => { setChosenAccount(e.target.value); navigate("/"); }}>
              {accounts.data!.items.map((a) => <option key={a.account_id} value={a.account_id}>{a.account_id}</option>)}
            </select>
          </div>
        )}
        {items.length > 0 && (
          <div className="switcher">
            <label htmlFor="tenant-switcher">Tenant</label>
            <select
              id="tenant-switcher"
              value={current ?? ""}
              onChange={(e) => navigate(tenantPath(e.target.value, route.name === "tenant" ? route.tab : "dashboard"))}
            >
              {!current && <option value="">Choose…</option>}
              {items.map((t) => (
                <option key={t.tenant_id} value={t.tenant_id}>{t.name ? `${t.name} (${t.tenant_id})` : t.tenant_id}</option>
              ))}
            </select>
          </div>
        )}
        <span className="who" data-testid="who">
          {session.claims.sub}
          {session.claims.account && <> · {session.claims.account}</>} · {session.claims.roles.join(", ")}
          {session.claims.mfa && " · MFA"}
        </span>
        <button type="button" onClick={onSignOut}>Sign out</button>
      </header>
      {notifications && account && <NotificationBanner api={api} account={account} />}
      {route.name === "tenant" && (
        <nav className="tabs" aria-label="Tenant sections">
          {TABS.map((t) => (
            <a
              key={t}
              href={tenantPath(route.tenant, t)}
              aria-current={route.tab === t ? "page" : undefined}
              onClick={(e) => {
                if (e.metaKey || e.ctrlKey || e.shiftKey) return;
                e.preventDefault();
                navigate(tenantPath(route.tenant, t));
              }}
            >
              {TAB_LABEL[t]}
            </a>
          ))}
        </nav>
      )}
      <main id="main" tabIndex={-1}>
        {route.name === "tenant" && <h1 className="sr-only">{TAB_LABEL[route.tab]} for {route.tenant}</h1>}
        {route.name === "home" && (
          <>
            <h1>Tenants</h1>
            {(tenants.loading || accounts.loading) && <Loading label="Loading tenants…" />}
            <ErrorMessage error={accounts.error ?? tenants.error} />
            {tenants.data && !items.length && <p>This account has no tenant yet.</p>}
          </>
        )}
        {route.name === "not-found" && (
          <>
            <h1>Not found</h1>
            <p>There is no page at <code>{route.path}</code>.</p>
          </>
        )}
        {route.name === "tenant" && (
          <TenantScreen
            api={api}
            account={items.find((t) => t.tenant_id === route.tenant)?.account_id ?? account ?? ""}
            tenant={route.tenant}
            tab={route.tab}
            tenants={items}
            mfa={session.claims.mfa}
            onTenantsChanged={tenants.reload}
            kmipEndpoint={kmipEndpoint}
          />
        )}
      </main>
    </>
  );
}

function TenantScreen({ api, account, tenant, tab, tenants, mfa, onTenantsChanged, kmipEndpoint }: {
  api: CmkApi; account: string; tenant: string; tab: TenantTab; tenants: Tenant[]; mfa: boolean; onTenantsChanged: () => void; kmipEndpoint: string;
}) {
  switch (tab) {
    case "dashboard":
      return <Dashboard api={api} tenant={tenant} />;
    case "master-key":
      return <MasterKeyWizard key={tenant} api={api} account={account} tenant={tenant} mfa={mfa} />;
    case "keys":
      return <Keys api={api} account={account} tenant={tenant} tenants={tenants} onChanged={onTenantsChanged} />;
    case "services":
      return <Services api={api} tenant={tenant} kmipEndpoint={kmipEndpoint} />;
    case "audit":
      return <Audit api={api} tenant={tenant} />;
  }
}
