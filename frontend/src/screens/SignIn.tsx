import { useEffect, useState } from "react";
import { beginSignIn, completeSignIn, discover } from "../auth/oidc";
import type { UiConfig } from "../config";
import { ErrorMessage, Loading } from "../components/common";
import { navigate } from "../lib/router";

export function SignIn({ config, returnTo = "/" }: { config: UiConfig; returnTo?: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error>();
  const start = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const discovery = await discover(config);
      window.location.assign(await beginSignIn(config, discovery, returnTo));
    } catch (err) {
      setError(err as Error);
      setBusy(false);
    }
  };
  return (
    <main id="main" className="signin">
      <div className="card narrow">
        <h1>OpenKCM</h1>
        <p>Customer key management for your tenants: master keys, key rotation, KMIP client certificates and the audit trail.</p>
        <button type="button" className="primary" onClick={start} disabled={busy} autoFocus>
          {busy ? "Redirecting to sign-in…" : "Sign in"}
        </button>
        <p className="muted small">You sign in with your organisation's identity provider ({new URL(config.issuer).host}).</p>
        <ErrorMessage error={error} />
      </div>
    </main>
  );
}

// React's development StrictMode runs effects twice; the code can be redeemed only once, so the
// exchange is shared per callback URL.
let inflight: { search: string; promise: ReturnType<typeof completeSignIn> } | undefined;

function redeemOnce(config: UiConfig, search: string) {
  if (!inflight || inflight.search !== search) {
    inflight = { search, promise: discover(config).then((d) => completeSignIn(config, d, search)) };
  }
  return inflight.promise;
}

export function Callback({ config, onSignedIn }: { config: UiConfig; onSignedIn: () => void }) {
  const [error, setError] = useState<Error>();
  useEffect(() => {
    let done = false;
    (async () => {
      try {
        const { returnTo } = await redeemOnce(config, window.location.search);
        if (!done) {
          onSignedIn();
          navigate(returnTo.startsWith("/") && !returnTo.startsWith("//") ? returnTo : "/", true);
        }
      } catch (err) {
        if (!done) setError(err as Error);
      }
    })();
    return () => {
      done = true;
    };
    // run once per mount
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  return (
    <main id="main" className="signin">
      <div className="card narrow">
        {error ? (
          <>
            <ErrorMessage error={error} />
            <button type="button" className="primary" onClick={() => navigate("/login", true)}>
              Sign in again
            </button>
          </>
        ) : (
          <Loading label="Completing sign-in…" />
        )}
      </div>
    </main>
  );
}
