/**
 * `/sandbox`: the agent catalogue as cards (installed ones first, the Shell among them, so
 * a fresh install can always start a terminal), installing an agent from its card, and
 * the caller's recent sessions.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import {
  ApiError,
  sessionMeta,
  type Agent,
  installState,
  type InstallState,
  type ActivityState,
  type SandboxItem,
} from "../api/client";
import { useApi } from "../api/context";
import { StartDialog } from "../components/StartDialog";
import { usePolling, useTitle } from "../hooks";
import { Link, navigate, sessionPath } from "../router";
import { usageLine } from "../usage";
import {
  ACTIVITY_LABEL,
  ACTIVITY_MARK,
  isActivityState,
  notifyWaiting,
  shouldNotify,
} from "../activity";
import { NotifyButton } from "../components/ActivityBadge";

const LIST_PERIOD_MS = 5000;
export const INSTALL_POLL_MS = 1000;
const LOG_LINES_SHOWN = 200;

/** Installed agents first; otherwise the server's (catalogue) order. */
export function sortAgents(agents: Agent[]): Agent[] {
  return agents
    .map((agent, index) => ({ agent, index }))
    .sort((a, b) => Number(b.agent.installed) - Number(a.agent.installed) || a.index - b.index)
    .map(({ agent }) => agent);
}

interface InstallView {
  state: InstallState;
  log: string[];
  error: string | null;
}

function installView(from: { state: string; log: string[]; error?: string | null }): InstallView {
  return { state: installState(from.state), log: from.log, error: from.error ?? null };
}

function InstallLog({ lines, label }: { lines: string[]; label: string }) {
  const ref = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const box = ref.current;
    if (box) box.scrollTop = box.scrollHeight;
  }, [lines]);
  return (
    <pre ref={ref} className="install-log" role="log" aria-label={`Install log of ${label}`}>
      {lines.length ? lines.slice(-LOG_LINES_SHOWN).join("\n") : "Starting…"}
    </pre>
  );
}

function AgentCard({
  agent,
  orgAdmin,
  onStart,
  onInstalled,
}: {
  agent: Agent;
  orgAdmin: boolean | undefined;
  onStart: (agent: Agent) => void;
  onInstalled: () => void;
}) {
  const api = useApi();
  const hintId = `agent-hint-${agent.id}`;
  const showsByos = agent.byos || agent.id === "claude-code";
  // an install running (or failed) when the page loaded is shown; an old success is not news
  const [install, setInstall] = useState<InstallView | null>(
    agent.install && agent.install.state !== "succeeded" ? installView(agent.install) : null,
  );
  const [requestError, setRequestError] = useState<string | null>(null);
  const [requesting, setRequesting] = useState(false);
  const running = install?.state === "running";
  // `canInstall` is the server's word (org admin or local operator, and installable);
  // whoami's orgAdmin, when known, must agree.
  const mayInstall = agent.canInstall === true && orgAdmin !== false;

  const poll = useCallback(async () => {
    try {
      const status = await api.installStatus(agent.id);
      setInstall(installView(status));
      if (status.state === "succeeded") onInstalled();
    } catch (err) {
      setInstall((old) => ({
        state: "failed",
        log: old?.log ?? [],
        error: err instanceof Error ? err.message : String(err),
      }));
    }
  }, [api, agent.id, onInstalled]);
  usePolling(poll, INSTALL_POLL_MS, running);

  const startInstall = async () => {
    setRequesting(true);
    setRequestError(null);
    try {
      await api.installAgent(agent.id);
      setInstall({ state: "running", log: [], error: null });
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        // already installing (another tab, the CLI): follow that install
        setInstall((old) => ({ state: "running", log: old?.log ?? [], error: null }));
      } else {
        setRequestError(err instanceof Error ? err.message : String(err));
      }
    } finally {
      setRequesting(false);
    }
  };

  const needs = (agent.missing ?? []).filter((m) => !m.startsWith("binary "));
  const manual = agent.manualInstall || agent.installHint;

  let hint: React.ReactNode = null;
  if (!agent.installed) {
    if (running) {
      hint = <>Installing…</>;
    } else if (mayInstall) {
      hint = <>Not installed on this server yet.</>;
    } else if (agent.installable === false) {
      hint = (
        <>
          Not installed on this server.{orgAdmin === false && " Ask your operator to install it:"}
          {manual && (
            <>
              <br />
              <code className="install-hint">{manual}</code>
            </>
          )}
        </>
      );
    } else if (agent.installable === true) {
      hint = (
        <>
          Not installed on this server. Ask your operator to install it.
          {agent.installHint && (
            <>
              <br />
              <code className="install-hint">{agent.installHint}</code>
            </>
          )}
        </>
      );
    } else {
      // an older server without the install fields
      hint = (
        <>
          Not installed on this server.
          {agent.installHint && (
            <>
              <br />
              <code className="install-hint">{agent.installHint}</code>
            </>
          )}
        </>
      );
    }
  } else if (needs.length > 0) {
    hint = <>Needs {needs.join(", ")} on the server.</>;
  }

  return (
    <li
      className={`card agent-card${agent.kind === "shell" ? " agent-card-shell" : ""}`}
      data-testid={`sandbox-agent-card-${agent.id}`}
    >
      <div className="agent-card-head">
        <h3 className="agent-label">{agent.label}</h3>
        <code className="agent-id">{agent.id}</code>
      </div>
      <p className="agent-blurb" title={agent.blurb}>
        {agent.blurb}
      </p>
      {hint && (
        <p id={hintId} className="hint">
          {hint}
        </p>
      )}
      {install && (
        <div className="install-progress" aria-busy={running}>
          <InstallLog lines={install.log} label={agent.label} />
          {install.state === "failed" && (
            <p className="form-error" role="alert">
              Install failed: {install.error || "see the log"}
            </p>
          )}
        </div>
      )}
      {install?.state === "succeeded" && agent.installed && (
        <p className="install-done" role="status">
          Installed{agent.version ? ` (${agent.version})` : ""}.
        </p>
      )}
      {requestError && (
        <p className="form-error" role="alert">
          {requestError}
        </p>
      )}
      <div className="agent-card-actions">
        <button
          type="button"
          className="btn btn-primary"
          disabled={!agent.installed}
          aria-describedby={hint ? hintId : undefined}
          onClick={() => onStart(agent)}
        >
          Start session
        </button>
        {!agent.installed && mayInstall && !running && (
          <button
            type="button"
            className="btn btn-primary"
            disabled={requesting}
            onClick={() => void startInstall()}
          >
            {requesting ? "Asking…" : install?.state === "failed" ? "Install again" : "Install"}
          </button>
        )}
        {showsByos && (
          <Link href="/sandbox/settings" className="link">
            Connect Claude Max
          </Link>
        )}
      </div>
    </li>
  );
}

function SessionRow({ item }: { item: SandboxItem }) {
  const meta = sessionMeta(item);
  // the agent's activity, when the server reports it (docs/activity.md)
  const activity = item.activity;
  return (
    <li className="session-row" data-testid={`sandbox-session-${item.id}`}>
      <div className="session-row-text">
        <span className="session-name">
          {item.name}
          {isActivityState(activity) && (
            <span
              className={`activity activity-${activity}`}
              data-testid={`session-activity-${item.id}`}
              data-state={activity}
            >
              <span aria-hidden>{ACTIVITY_MARK[activity]}</span> {ACTIVITY_LABEL[activity]}
            </span>
          )}
        </span>
        <span className={`session-meta status-${item.status}`}>{meta}</span>
        {item.usage30d && (
          <span className="session-spend" data-testid={`session-spend-${item.id}`}>
            Spend, last 30 days: {usageLine(item.usage30d)}
          </span>
        )}
      </div>
      <Link
        href={sessionPath(item.id)}
        className="btn btn-small"
        aria-label={`Attach to ${item.name}`}
      >
        Attach →
      </Link>
    </li>
  );
}

function ByosBanner() {
  const params = new URLSearchParams(window.location.search);
  const outcome = params.get("byos");
  if (outcome === "ok") {
    return (
      <p className="banner banner-ok" role="status">
        Claude Max connected.
      </p>
    );
  }
  if (outcome === "error") {
    return (
      <p className="banner banner-error" role="alert">
        Connecting Claude Max failed: {params.get("reason") || "unknown error"}
      </p>
    );
  }
  return null;
}

export function Landing({ orgAdmin }: { orgAdmin?: boolean | undefined } = {}) {
  const api = useApi();
  const [agents, setAgents] = useState<Agent[] | null>(null);
  const [agentsError, setAgentsError] = useState<string | null>(null);
  const [sessions, setSessions] = useState<SandboxItem[] | null>(null);
  const [listFailed, setListFailed] = useState<string | null>(null);
  const [starting, setStarting] = useState<Agent | null>(null);
  useTitle("Sessions");

  const [agentsVersion, setAgentsVersion] = useState(0);
  const reloadAgents = useCallback(() => setAgentsVersion((v) => v + 1), []);

  useEffect(() => {
    let live = true;
    api.listAgents().then(
      (list) => {
        if (!live) return;
        setAgents(sortAgents(list));
        setAgentsError(null);
      },
      (err: unknown) => live && setAgentsError(err instanceof Error ? err.message : String(err)),
    );
    return () => {
      live = false;
    };
  }, [api, agentsVersion]);

  // each session's last activity seen here: a change into waiting while this tab is
  // hidden raises a notification (same tag as the session page's: never two)
  const activities = useRef(new Map<string, ActivityState>());
  const refresh = useCallback(async () => {
    try {
      const list = await api.listSessions();
      for (const item of list) {
        if (!isActivityState(item.activity)) continue;
        if (shouldNotify(activities.current.get(item.id), item.activity, document.hidden)) {
          notifyWaiting(item.name, item.id);
        }
        activities.current.set(item.id, item.activity);
      }
      setSessions(list);
      setListFailed(null);
    } catch (err) {
      setListFailed(err instanceof ApiError ? err.message : "network error");
    }
  }, [api]);
  usePolling(refresh, LIST_PERIOD_MS);

  return (
    <div className="page landing">
      <ByosBanner />
      <section aria-labelledby="agents-title">
        <h1 id="agents-title" className="page-title">
          Start a sandbox
        </h1>
        <p className="lead">
          Each session runs a coding agent (or a plain shell) in its own workspace on the
          server, in a terminal you can reach from any device.
        </p>
        {agentsError && (
          <p className="form-error" role="alert">
            Could not load the agent catalogue: {agentsError}
          </p>
        )}
        <ul className="agent-grid" aria-busy={agents === null && !agentsError}>
          {agents === null && !agentsError
            ? [0, 1, 2].map((i) => <li key={i} className="card agent-card skeleton" aria-hidden />)
            : (agents ?? []).map((agent) => (
                <AgentCard
                  key={agent.id}
                  agent={agent}
                  orgAdmin={orgAdmin}
                  onStart={setStarting}
                  onInstalled={reloadAgents}
                />
              ))}
        </ul>
      </section>

      <section aria-labelledby="recent-title" className="recent">
        <div className="section-head">
          <h2 id="recent-title">Recent sessions</h2>
          {sessions?.some((s) => isActivityState(s.activity)) && <NotifyButton />}
          {listFailed !== null && (
            <span className="pill pill-amber" role="status" title={listFailed}>
              API pending
            </span>
          )}
        </div>
        <p className="hint">
          Sessions keep running when you close the tab; attach again any time.
          {sessions?.some((s) => s.usage30d) && (
            <>
              {" "}
              Model spend and budgets: <Link href="/sandbox/usage">Usage</Link>.
            </>
          )}
        </p>
        {sessions === null && listFailed !== null && (
          <p className="empty">
            The sessions API is not answering ({listFailed}); this list retries by itself.
          </p>
        )}
        {sessions !== null && sessions.length === 0 && (
          <p className="empty">No sandbox sessions yet. Pick an agent above to start one.</p>
        )}
        {sessions !== null && sessions.length > 0 && (
          <ul className="session-list">
            {sessions.map((item) => (
              <SessionRow key={item.id} item={item} />
            ))}
          </ul>
        )}
      </section>

      {starting && (
        <StartDialog
          agent={starting}
          onClose={() => setStarting(null)}
          onStarted={(item) => navigate(sessionPath(item.id))}
        />
      )}
    </div>
  );
}
