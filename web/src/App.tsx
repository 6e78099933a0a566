/** The shell: header, sign-in gate (any 401 shows it), and the routes. */
import { Suspense, lazy, useCallback, useEffect, useMemo, useState } from "react";
import { createApi, type Api, type WhoAmI } from "./api/client";
import { ApiContext } from "./api/context";
import { Landing } from "./pages/Landing";
import { SessionPage } from "./pages/SessionPage";
import { SharedSessionPage } from "./pages/SharedSession";
import { Settings } from "./pages/Settings";
import { SignIn } from "./pages/SignIn";
import { Link, parseRoute, useLocationPath } from "./router";

// the usage page is a chunk of its own, so the landing stays small
const UsagePage = lazy(() => import("./pages/Usage"));
// the org admin's page too (docs/console.md, "The org admin's page")
const AdminPage = lazy(() => import("./pages/Admin"));

type Auth = { state: "checking" } | { state: "in"; who: WhoAmI | null } | { state: "out" };

export function App({ api: injected }: { api?: Api }) {
  const [auth, setAuth] = useState<Auth>({ state: "checking" });
  const api = useMemo(
    () => injected ?? createApi({ onUnauthenticated: () => setAuth({ state: "out" }) }),
    [injected],
  );
  const path = useLocationPath();
  const route = parseRoute(path);
  // a share link (`/sandbox/<id>?share=<token>`) opens the session as a spectator
  const shareToken = new URLSearchParams(window.location.search).get("share");

  const check = useCallback(() => {
    api.whoami().then(
      (who) => setAuth({ state: "in", who }),
      (err: unknown) => {
        const status = (err as { status?: number }).status;
        // Anything but 401 (e.g. an older server without whoami) still lets the console try.
        setAuth(status === 401 ? { state: "out" } : { state: "in", who: null });
      },
    );
  }, [api]);
  useEffect(check, [check]);
  const signedOut = useCallback(() => setAuth({ state: "out" }), []);

  let page: React.ReactNode = null;
  if (auth.state === "out") page = <SignIn onRetry={check} />;
  else if (auth.state === "in") {
    if (route.name === "landing") page = <Landing orgAdmin={auth.who?.orgAdmin} />;
    else if (route.name === "settings")
      page = (
        <Settings
          email={auth.who?.email ?? ""}
          onSignedOut={() => setAuth({ state: "out" })}
        />
      );
    else if (route.name === "usage")
      page = (
        <Suspense fallback={<p className="page muted">Loading usage…</p>}>
          <UsagePage who={auth.who} />
        </Suspense>
      );
    else if (route.name === "admin")
      page = (
        <Suspense fallback={<p className="page muted">Loading…</p>}>
          <AdminPage who={auth.who} onUnauthenticated={signedOut} />
        </Suspense>
      );
    else if (route.name === "session" && shareToken)
      page = <SharedSessionPage key={route.id} id={route.id} token={shareToken} who={auth.who} />;
    else if (route.name === "session")
      page = <SessionPage key={route.id} id={route.id} who={auth.who} />;
    else
      page = (
        <div className="page narrow">
          <h1 className="page-title">Page not found</h1>
          <Link href="/sandbox">Back to sessions</Link>
        </div>
      );
  }

  return (
    <ApiContext.Provider value={api}>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="app-header">
        <Link href="/sandbox" className="brand" aria-label="OpenOva Sandbox, sessions">
          <span className="brand-mark" aria-hidden>
            ▚
          </span>
          <span className="brand-name">OpenOva Sandbox</span>
        </Link>
        <nav aria-label="Main" className="app-nav">
          <Link
            href="/sandbox"
            aria-current={route.name === "landing" ? "page" : undefined}
          >
            Sessions
          </Link>
          {auth.state === "in" && auth.who?.orgAdmin && (
            <Link
              href="/sandbox/usage"
              aria-current={route.name === "usage" ? "page" : undefined}
            >
              Usage
            </Link>
          )}
          {auth.state === "in" && auth.who?.orgAdmin && (
            <Link
              href="/sandbox/admin"
              aria-current={route.name === "admin" ? "page" : undefined}
            >
              Admin
            </Link>
          )}
          <Link
            href="/sandbox/settings"
            aria-current={route.name === "settings" ? "page" : undefined}
          >
            Settings
          </Link>
        </nav>
        {auth.state === "in" && auth.who?.email && (
          <span className="who" title={auth.who.org ? `org ${auth.who.org}` : undefined} data-testid="whoami-email">
            {auth.who.email}
          </span>
        )}
      </header>
      <main id="main" tabIndex={-1}>
        {page}
      </main>
    </ApiContext.Provider>
  );
}
