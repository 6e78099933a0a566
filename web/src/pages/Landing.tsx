/** `/sandbox`: the agent catalogue as cards, and the caller's recent sessions. */
import { useCallback, useEffect, useState } from "react";
import { ApiError, sessionMeta, type Agent, type SandboxItem } from "../api/client";
import { useApi } from "../api/context";
import { StartDialog } from "../components/StartDialog";
import { usePolling, useTitle } from "../hooks";
import { Link, navigate, sessionPath } from "../router";

const LIST_PERIOD_MS = 5000;

function AgentCard({ agent, onStart }: { agent: Agent; onStart: (agent: Agent) => void }) {
  const hintId = `agent-hint-${agent.id}`;
  const showsByos = agent.byos || agent.id === "claude-code";
  return (
    <li className="card agent-card" data-testid={`sandbox-agent-card-${agent.id}`}>
      <div className="agent-card-head">
        <h3 className="agent-label">{agent.label}</h3>
        <code className="agent-id">{agent.id}</code>
      </div>
      <p className="agent-blurb" title={agent.blurb}>
        {agent.blurb}
      </p>
      {!agent.installed && (
        <p id={hintId} className="hint">
          Not installed on this server.
          {agent.installHint && (
            <>
              <br />
              <code className="install-hint">{agent.installHint}</code>
            </>
          )}
        </p>
      )}
      <div className="agent-card-actions">
        <button
          type="button"
          className="btn btn-primary"
          disabled={!agent.installed}
          aria-describedby={agent.installed ? undefined : hintId}
          onClick={() => onStart(agent)}
        >
          Start session
        </button>
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
  return (
    <li className="session-row" data-testid={`sandbox-session-${item.id}`}>
      <div className="session-row-text">
        <span className="session-name">{item.name}</span>
        <span className={`session-meta status-${item.status}`}>{meta}</span>
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

export function Landing() {
  const api = useApi();
  const [agents, setAgents] = useState<Agent[] | null>(null);
  const [agentsError, setAgentsError] = useState<string | null>(null);
  const [sessions, setSessions] = useState<SandboxItem[] | null>(null);
  const [listFailed, setListFailed] = useState<string | null>(null);
  const [starting, setStarting] = useState<Agent | null>(null);
  useTitle("Sessions");

  useEffect(() => {
    let live = true;
    api.listAgents().then(
      (list) => live && setAgents(list),
      (err: unknown) => live && setAgentsError(err instanceof Error ? err.message : String(err)),
    );
    return () => {
      live = false;
    };
  }, [api]);

  const refresh = useCallback(async () => {
    try {
      setSessions(await api.listSessions());
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
          Each session runs a coding agent in its own workspace on the server, in a terminal
          you can reach from any device.
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
                <AgentCard key={agent.id} agent={agent} onStart={setStarting} />
              ))}
        </ul>
      </section>

      <section aria-labelledby="recent-title" className="recent">
        <div className="section-head">
          <h2 id="recent-title">Recent sessions</h2>
          {listFailed !== null && (
            <span className="pill pill-amber" role="status" title={listFailed}>
              API pending
            </span>
          )}
        </div>
        <p className="hint">Sessions keep running when you close the tab; attach again any time.</p>
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
