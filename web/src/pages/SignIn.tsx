/** Shown on any 401: single sign-on when the server has it, and where the login link
 * comes from. */
import { useEffect, useState } from "react";
import type { AuthConfig } from "../api/client";
import { useApi } from "../api/context";
import { useTitle } from "../hooks";

/** The server's OIDC sign-in, coming back to this console page. */
export function signInUrl(): string {
  const here = window.location.pathname + window.location.search;
  const next = here.startsWith("/sandbox") ? here : "/sandbox";
  return `/auth/oidc/start?next=${encodeURIComponent(next)}`;
}

export function SignIn({ onRetry }: { onRetry: () => void }) {
  const api = useApi();
  // undefined: not asked yet; null: the server did not say (the login-link text then)
  const [config, setConfig] = useState<AuthConfig | null | undefined>(undefined);
  useTitle("Sign in");
  useEffect(() => {
    api.authConfig().then(setConfig, () => setConfig(null));
  }, [api]);
  const sso = config?.oidcConfigured === true;
  return (
    <div className="page narrow">
      <section className="card signin" aria-labelledby="signin-title">
        <h1 id="signin-title" className="page-title">
          Sign in to OpenOva Sandbox
        </h1>
        {sso && (
          <div className="oidc">
            <button
              type="button"
              className="btn btn-primary"
              aria-describedby="oidc-note"
              onClick={() => window.location.assign(signInUrl())}
            >
              Sign in
            </button>
            <p id="oidc-note" className="hint">
              Signs you in with {config.issuer || "your identity provider"} and brings you back
              here.
            </p>
          </div>
        )}
        {config !== undefined && !sso && (
          <>
            <p>
              This console signs you in with a login link. The terminal running{" "}
              <code>sandbox serve</code> printed it when the server started: a line containing{" "}
              <code>/login?token=…</code>. Open that link in this browser.
            </p>
            <p>
              Lost it? Restart <code>sandbox serve</code> for a new one, or on the server run{" "}
              <code>sandbox token --sub &lt;id&gt; --email &lt;you@org&gt; --org &lt;org&gt;</code>{" "}
              and open <code>{window.location.origin}/login?token=&lt;token&gt;</code>.
            </p>
          </>
        )}
        <button type="button" className="btn" onClick={onRetry}>
          I have signed in — try again
        </button>
      </section>
    </div>
  );
}
