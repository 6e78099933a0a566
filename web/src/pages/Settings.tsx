/** `/sandbox/settings`: Claude Max (bring-your-own-subscription) and terminal preferences. */
import { useCallback, useEffect, useState } from "react";
import type { ByosConfig, ByosStatus } from "../api/client";
import { useApi } from "../api/context";
import { FONT_MAX, FONT_MIN, usePrefs, useTitle } from "../hooks";

function formatWhen(value: string | undefined): string {
  if (!value) return "";
  const when = new Date(value);
  return Number.isNaN(when.getTime()) ? value : when.toLocaleString();
}

export function ClaudeCodeCard({
  redirect = (url: string) => window.location.assign(url),
}: {
  redirect?: (url: string) => void;
}) {
  const api = useApi();
  const [config, setConfig] = useState<ByosConfig | null>(null);
  const [status, setStatus] = useState<ByosStatus | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      const [cfg, st] = await Promise.all([api.byosConfig(), api.byosStatus()]);
      setConfig(cfg);
      setStatus(st);
      setLoadError(null);
    } catch (err) {
      setLoadError(err instanceof Error ? err.message : String(err));
    }
  }, [api]);

  useEffect(() => {
    void load();
  }, [load]);

  const connect = async () => {
    setBusy(true);
    setActionError(null);
    try {
      const started = await api.byosStart("/sandbox/settings");
      redirect(started.authorizeUrl || started.authorization_url);
    } catch (err) {
      setActionError(err instanceof Error ? err.message : String(err));
      setBusy(false);
    }
  };

  const disconnect = async () => {
    setBusy(true);
    setActionError(null);
    try {
      await api.byosDisconnect();
      await load();
    } catch (err) {
      setActionError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  let body: React.ReactNode;
  if (loadError) {
    body = (
      <p className="form-error" role="alert">
        Could not load the Claude Max status: {loadError}
      </p>
    );
  } else if (!config || !status) {
    body = <p className="muted">Loading…</p>;
  } else if (status.disabled) {
    body = (
      <p>
        <span className="pill pill-muted">Disabled</span> The operator has turned off personal
        Claude subscriptions on this server.
      </p>
    );
  } else if (!config.clientIdConfigured || status.client_id_pending) {
    body = (
      <p>
        <span className="pill pill-amber">Operator setup pending</span> The server has no OAuth
        client id for Claude yet; ask the operator to set{" "}
        <code>SANDBOX_BYOS_CLAUDE_CODE_CLIENT_ID</code>.
      </p>
    );
  } else if (status.connected) {
    const account = status.accountLabel || status.anthropic_account_email || "your Claude account";
    const since = formatWhen(status.connectedAt || status.connected_at || undefined);
    body = (
      <>
        <p>
          <span className="pill pill-green">Connected</span> {account}
          {since && <span className="muted"> · since {since}</span>}
        </p>
        <button type="button" className="btn btn-danger-outline" onClick={() => void disconnect()} disabled={busy}>
          {busy ? "Disconnecting…" : "Disconnect"}
        </button>
      </>
    );
  } else {
    body = (
      <>
        <p>
          {status.status === "error" ? (
            <span className="pill pill-red">Connection error</span>
          ) : (
            <span className="pill pill-muted">Not connected</span>
          )}{" "}
          Claude Code sessions use your own Claude Max subscription once connected.
        </p>
        <button type="button" className="btn btn-primary" onClick={() => void connect()} disabled={busy}>
          {busy ? "Redirecting…" : "Connect"}
        </button>
      </>
    );
  }

  return (
    <section className="card settings-card" aria-labelledby="byos-title" data-testid="byos-card">
      <h2 id="byos-title">Claude Code · Claude Max</h2>
      {body}
      {actionError && (
        <p className="form-error" role="alert">
          {actionError}
        </p>
      )}
    </section>
  );
}

function TerminalPrefsCard() {
  const [prefs, setPrefs] = usePrefs();
  return (
    <section className="card settings-card" aria-labelledby="term-title">
      <h2 id="term-title">Terminal</h2>
      <div className="field field-inline">
        <label htmlFor="pref-font">Font size</label>
        <input
          id="pref-font"
          type="number"
          min={FONT_MIN}
          max={FONT_MAX}
          value={prefs.fontSize}
          onChange={(ev) => setPrefs({ fontSize: Number(ev.target.value) || prefs.fontSize })}
        />
      </div>
      <div className="field field-check">
        <input
          id="pref-webgl"
          type="checkbox"
          checked={prefs.webgl}
          onChange={(ev) => setPrefs({ webgl: ev.target.checked })}
          aria-describedby="pref-webgl-hint"
        />
        <label htmlFor="pref-webgl">Use the WebGL renderer</label>
      </div>
      <p id="pref-webgl-hint" className="hint">
        Faster on large screens with a GPU; the default renderer works everywhere.
      </p>
    </section>
  );
}

function AccountCard({ email, onSignedOut }: { email: string; onSignedOut: () => void }) {
  const api = useApi();
  const [error, setError] = useState<string | null>(null);
  const signOut = async () => {
    try {
      const providerLogout = await api.logout();
      if (providerLogout) {
        // end the session at the identity provider too (it sends the browser back)
        window.location.assign(providerLogout);
        return;
      }
      onSignedOut();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  return (
    <section className="card settings-card" aria-labelledby="account-title">
      <h2 id="account-title">Account</h2>
      <p>
        Signed in as <strong>{email || "an account without an email"}</strong>. Your sessions
        keep running after you sign out.
      </p>
      <button type="button" className="btn" onClick={() => void signOut()}>
        Sign out
      </button>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

export function Settings({
  email = "",
  onSignedOut = () => undefined,
}: {
  email?: string;
  onSignedOut?: () => void;
}) {
  useTitle("Settings");
  return (
    <div className="page narrow">
      <h1 className="page-title">Settings</h1>
      <ClaudeCodeCard />
      <TerminalPrefsCard />
      <AccountCard email={email} onSignedOut={onSignedOut} />
    </div>
  );
}
