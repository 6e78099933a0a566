/**
 * `/sandbox/<id>`: the provisioning waterfall until the sandbox is Ready (or Failed), then
 * its terminals. Polling stops once the outcome is known, so the terminal view never
 * re-renders on a timer.
 */
import { Suspense, lazy, useCallback, useEffect, useRef, useState } from "react";
import {
  ApiError,
  sessionMeta,
  type ActivityState,
  type Condition,
  type SandboxItem,
  type TerminalListItem,
  type WhoAmI,
} from "../api/client";
import { useApi } from "../api/context";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { DeviceLinkDialog } from "../components/DeviceLinkDialog";
import { ActivityBadge, NotifyButton } from "../components/ActivityBadge";
import { Presence } from "../components/Presence";
import { SessionSpend } from "../components/SessionSpend";
import { ShareDialog } from "../components/ShareDialog";
import { activityTitle, notifyWaiting, shouldNotify } from "../activity";
import { usePolling, usePrefs, useTerminalLayout, useTitle } from "../hooks";
import { Link, navigate, sessionPath } from "../router";
import type { ConnectionState, StateDetail } from "../terminal/connection";
import type { Control, ViewerInfo } from "../terminal/protocol";

const TerminalView = lazy(() => import("../terminal/TerminalView"));

export const CONDITION_ORDER = [
  "NamespaceReady",
  "RBACReady",
  "PVCsReady",
  "PtyReady",
  "McpReady",
  "TokenReady",
] as const;

const CONDITION_LABELS: Record<string, string> = {
  NamespaceReady: "Workspace",
  RBACReady: "Access rules",
  PVCsReady: "Volumes and repositories",
  PtyReady: "Terminal server",
  McpReady: "Tool servers",
  TokenReady: "Credentials",
};

export const POLL_MS = 2000;
const RETRY_CREATE_ATTEMPTS = 30;
const RESCUE_AGENT = "sovereign-shell";

export function isAttachable(item: SandboxItem): boolean {
  return item.status === "running" || item.status === "stopped";
}

export function isFailed(item: SandboxItem): boolean {
  return item.status === "failed";
}

/** Failed because the agent could not start: the one failure that clears by itself once
 * the agent can start (installed since, say), and that an attach tries again. */
export function agentUnavailable(item: SandboxItem): boolean {
  return isFailed(item) && failureCondition(item)?.reason === "AgentUnavailable";
}

/** The condition that explains a failure: the first False one with a reason, Ready last. */
export function failureCondition(item: SandboxItem): Condition | undefined {
  const falses = item.conditions.filter((c) => c.status === "False");
  return (
    falses.find((c) => c.type !== "Ready" && (c.reason || c.message)) ??
    falses.find((c) => c.reason || c.message) ??
    falses[0]
  );
}

type StepState = "done" | "active" | "waiting" | "failed" | "skipped";

/** Where a failure reason belongs when no step's own condition says False. */
const REASON_STEP: Record<string, string> = {
  AgentUnavailable: "PtyReady",
  AgentNotInstalled: "PtyReady",
  CrossOrgRepo: "PVCsReady",
  CloneFailed: "PVCsReady",
};

/**
 * Each step's state. While provisioning, the first step not done is the active one. Once
 * failed, the step that failed is the one whose condition is False (else the step the
 * failure reason belongs to); the steps never reached are "not attempted", so a repo
 * refused before anything ran does not put the ✕ on the workspace.
 */
export function stepStates(
  item: SandboxItem,
): { type: string; state: StepState; condition?: Condition }[] {
  const failed = isFailed(item);
  const cause = failed ? failureCondition(item) : undefined;
  const anyFalse = CONDITION_ORDER.some(
    (type) => item.conditions.find((c) => c.type === type)?.status === "False",
  );
  const fallbackStep = !anyFalse && cause?.reason ? REASON_STEP[cause.reason] : undefined;
  let activeTaken = false;
  return CONDITION_ORDER.map((type) => {
    const condition = item.conditions.find((c) => c.type === type);
    if (condition?.status === "True") return { type, state: "done", condition };
    if (failed) {
      const isCause = condition?.status === "False" || type === fallbackStep;
      if (isCause && condition?.status !== "False" && cause) {
        return { type, state: "failed", condition: cause };
      }
      return { type, state: isCause ? "failed" : "skipped", condition };
    }
    if (!activeTaken) {
      activeTaken = true;
      return { type, state: "active", condition };
    }
    return { type, state: "waiting", condition };
  });
}

const STEP_WORD: Record<StepState, string> = {
  done: "done",
  active: "in progress",
  waiting: "waiting",
  failed: "failed",
  skipped: "not attempted",
};

const STEP_ICON: Record<StepState, string> = {
  done: "✓",
  failed: "✕",
  active: "",
  waiting: "•",
  skipped: "–",
};

function Waterfall({ item }: { item: SandboxItem }) {
  return (
    <ol className="waterfall" aria-label="Provisioning steps">
      {stepStates(item).map(({ type, state, condition }) => (
        <li
          key={type}
          className={`step step-${state}`}
          data-testid={`condition-${type}`}
          data-state={state}
        >
          <span className="step-icon" aria-hidden>
            {STEP_ICON[state]}
          </span>
          <span className="step-text">
            <span className="step-title">
              {CONDITION_LABELS[type]} <code className="step-type">{type}</code>
            </span>
            <span className="step-detail">
              <span className="visually-hidden">{STEP_WORD[state]}. </span>
              {condition?.message || condition?.reason || "\u00a0"}
            </span>
          </span>
        </li>
      ))}
    </ol>
  );
}

interface TerminalTab {
  key: string;
  label: string;
  attachUrl: string;
  terminalId?: string;
}

const AGENT_LABELS: Record<string, string> = {
  [RESCUE_AGENT]: "Rescue shell",
  shell: "Shell",
};

function agentLabel(agent: string): string {
  return AGENT_LABELS[agent] ?? agent;
}

/** "Rescue shell", "Rescue shell 2", …: the next free number for this agent's tabs. */
function nextLabel(tabs: TerminalTab[], agent: string): string {
  const base = agentLabel(agent);
  const taken = new Set(tabs.map((t) => t.label));
  if (!taken.has(base)) return base;
  for (let n = 2; ; n += 1) if (!taken.has(`${base} ${n}`)) return `${base} ${n}`;
}

/** The extra terminals of a listing as tabs, in the server's order (the primary is the
 * session's own terminal and has its own tab). */
export function tabsFromList(item: SandboxItem, listed: TerminalListItem[]): TerminalTab[] {
  const tabs: TerminalTab[] = [];
  for (const t of listed) {
    if (t.id === item.id || t.attachUrl === item.attachUrl) continue;
    tabs.push({ key: t.id, label: nextLabel(tabs, t.agent), attachUrl: t.attachUrl, terminalId: t.id });
  }
  return tabs;
}

/** What the primary terminal says about the session (v2 control frames). */
export interface LiveInfo {
  activity: ActivityState | null;
  viewers: ViewerInfo[];
}

/**
 * The session's activity and viewers from its primary terminal's controls, the tab title
 * that leads with the activity, and the notification when it starts waiting unseen.
 */
export function useLiveInfo(name: string, notifyTag: string) {
  const [info, setInfo] = useState<LiveInfo>({ activity: null, viewers: [] });
  const previous = useRef<ActivityState | null>(null);
  const nameRef = useRef(name);
  nameRef.current = name;
  const onControl = useCallback(
    (control: Control) => {
      if (control.type === "viewers") {
        setInfo((old) => ({ ...old, viewers: control.viewers }));
        return;
      }
      let next: ActivityState | undefined;
      if (control.type === "activity") next = control.state;
      if (control.type === "hello") {
        // a new connection: what it reports first is the state now, not a change
        previous.current = null;
        next = control.activity;
      }
      if (!next) return;
      if (shouldNotify(previous.current, next, document.hidden)) {
        notifyWaiting(nameRef.current, notifyTag);
      }
      previous.current = next;
      const state = next;
      setInfo((old) => ({ ...old, activity: state }));
    },
    [notifyTag],
  );
  return { info, onControl };
}

function SessionHeader({
  item,
  who,
  live,
  children,
}: {
  item: SandboxItem;
  who?: WhoAmI | null | undefined;
  live?: LiveInfo;
  children?: React.ReactNode;
}) {
  const meta = sessionMeta(item);
  return (
    <div className="session-head">
      <div className="session-head-text">
        <Link href="/sandbox" className="back-link">
          ← Sessions
        </Link>
        <h1 className="session-title">{item.name}</h1>
        <p className={`session-meta status-${item.status}`}>{meta}</p>
        <SessionSpend item={item} who={who} />
        {live && (live.activity || live.viewers.length > 0) && (
          <div className="session-live-info">
            {live.activity && <ActivityBadge state={live.activity} />}
            {live.activity && <NotifyButton />}
            <Presence viewers={live.viewers} />
          </div>
        )}
      </div>
      <div className="session-actions">{children}</div>
    </div>
  );
}

export function SessionPage({ id, who }: { id: string; who?: WhoAmI | null }) {
  const api = useApi();
  const [item, setItem] = useState<SandboxItem | null>(null);
  const [gone, setGone] = useState(false);
  const [pollError, setPollError] = useState<string | null>(null);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [retrying, setRetrying] = useState<string | null>(null);
  const [retryError, setRetryError] = useState<string | null>(null);
  const [tabs, setTabs] = useState<TerminalTab[]>([]);
  const [activeTab, setActiveTab] = useState("primary");
  const [rescueBusy, setRescueBusy] = useState(false);
  const [tabError, setTabError] = useState<string | null>(null);
  const [primaryRefused, setPrimaryRefused] = useState(false);
  const [sharing, setSharing] = useState(false);
  const [shareOpen, setShareOpen] = useState(false);
  // the user asked to start a failed (AgentUnavailable) sandbox's agent again: attach
  const [attachAnyway, setAttachAnyway] = useState(false);
  const [refusal, setRefusal] = useState<string | null>(null);
  const [prefs, setPrefs] = usePrefs();
  const checking = useRef(false);

  const settled =
    item !== null && (isAttachable(item) || (isFailed(item) && !agentUnavailable(item)));
  const live =
    item !== null && (isAttachable(item) || attachAnyway) && !gone && retrying === null;
  useTerminalLayout(live);
  const { info: liveInfo, onControl } = useLiveInfo(item?.name ?? id, id);
  useTitle(
    gone ? "Session not found" : activityTitle(item?.name ?? id, live ? liveInfo.activity : null),
  );
  const poll = useCallback(async () => {
    try {
      const next = await api.getSession(id);
      setItem(next);
      setPollError(null);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) setGone(true);
      else setPollError(err instanceof Error ? err.message : String(err));
    }
  }, [api, id]);
  // Polling stops once the outcome is known; a refused primary terminal (the agent
  // cannot start) resumes it, so the page shows the failure once the server records it,
  // and an agent that could not start is watched until it can (then the page attaches).
  usePolling(poll, POLL_MS, !gone && (!settled || primaryRefused) && retrying === null);

  // Extra terminals live on the server: after a reload, rebuild their tabs from it.
  useEffect(() => {
    if (!live) return;
    let current = true;
    api.listTerminals(id).then(
      (listed) => {
        if (!current || item === null) return;
        const fromServer = tabsFromList(item, listed);
        setTabs((old) => [
          ...fromServer,
          ...old.filter((t) => !fromServer.some((s) => s.key === t.key)),
        ]);
      },
      () => {
        // an older server, or a moment of trouble: the primary terminal still works
      },
    );
    return () => {
      current = false;
    };
    // `item` is read when the page goes live; a later poll result must not rebuild tabs.
  }, [api, id, live]);

  // When the primary terminal loses its socket, find out whether the session itself is gone.
  const onConnectionState = useCallback(
    (state: ConnectionState, detail?: StateDetail) => {
      setPrimaryRefused(state === "refused");
      if (state === "refused") {
        setRefusal(detail?.reason || null);
        setAttachAnyway(false);
      }
      if (state === "open") setRefusal(null);
      if (
        (state !== "reconnecting" && state !== "ended" && state !== "refused") ||
        checking.current
      )
        return;
      checking.current = true;
      api
        .getSession(id)
        .then((next) => {
          // a sandbox that failed after its terminal opened shows the failure
          if (isFailed(next)) setItem(next);
        })
        .catch((err: unknown) => {
          if (err instanceof ApiError && err.status === 404) setGone(true);
        })
        .finally(() => {
          checking.current = false;
        });
    },
    [api, id],
  );

  const deleteAndRetry = async (failed: SandboxItem) => {
    setRetryError(null);
    setRetrying("Deleting…");
    try {
      await api.deleteSession(failed.id);
      const body: { agent: string; name: string; repo?: string } = {
        agent: failed.agent,
        name: failed.name,
      };
      if (failed.repo) body.repo = failed.repo;
      setRetrying("Starting again…");
      for (let attempt = 0; ; attempt += 1) {
        try {
          const created = await api.createSession(body);
          setItem(created);
          setPrimaryRefused(false);
          setTabs([]);
          setActiveTab("primary");
          setRetrying(null);
          if (created.id !== id) navigate(sessionPath(created.id), { replace: true });
          return;
        } catch (err) {
          // The old sandbox is released asynchronously; its name frees up shortly.
          const busy = err instanceof ApiError && err.status === 409;
          if (!busy || attempt >= RETRY_CREATE_ATTEMPTS) throw err;
          setRetrying("Waiting for the old session to be cleaned up…");
          await new Promise((resolve) => window.setTimeout(resolve, 1000));
        }
      }
    } catch (err) {
      setRetryError(err instanceof Error ? err.message : String(err));
      setRetrying(null);
    }
  };

  const openRescue = async () => {
    setRescueBusy(true);
    setTabError(null);
    try {
      const terminal = await api.createTerminal(id, RESCUE_AGENT);
      setTabs((old) => [
        ...old,
        {
          key: terminal.id,
          label: nextLabel(old, RESCUE_AGENT),
          attachUrl: terminal.attachUrl,
          terminalId: terminal.id,
        },
      ]);
      setActiveTab(terminal.id);
    } catch (err) {
      // 429 session-limit: the detail says how many terminals the quota allows
      setTabError(`Could not open the rescue shell: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      setRescueBusy(false);
    }
  };

  const closeTab = async (tab: TerminalTab) => {
    if (!tab.terminalId) return;
    setTabError(null);
    try {
      await api.closeTerminal(id, tab.terminalId);
    } catch (err) {
      // already gone is what closing wanted
      if (!(err instanceof ApiError && err.status === 404)) {
        setTabError(`Could not close ${tab.label}: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
    }
    setTabs((old) => old.filter((t) => t.key !== tab.key));
    setActiveTab((current) => (current === tab.key ? "primary" : current));
  };

  const deleteButton = (
    <button type="button" className="btn btn-danger-outline" onClick={() => setConfirmDelete(true)}>
      Delete
    </button>
  );
  const confirmDialog = confirmDelete && item && (
    <ConfirmDialog
      title="Delete this session?"
      message={`“${item.name}” stops its terminals and removes its workspace. This cannot be undone.`}
      confirmLabel="Delete session"
      busyLabel="Deleting…"
      onCancel={() => setConfirmDelete(false)}
      onConfirm={async () => {
        await api.deleteSession(item.id);
        navigate("/sandbox");
      }}
    />
  );

  if (gone) {
    return (
      <div className="page narrow">
        <div className="card notice" role="alert">
          <h1 className="page-title">Session no longer exists</h1>
          <p>
            <code>{id}</code> was deleted or never existed. Sessions you own are listed on the
            sessions page.
          </p>
          <Link href="/sandbox" className="btn btn-primary">
            Back to sessions
          </Link>
        </div>
      </div>
    );
  }

  if (item === null) {
    return (
      <div className="page narrow" aria-busy="true">
        <p className="muted">{pollError ? `Cannot reach the server: ${pollError}` : "Loading session…"}</p>
      </div>
    );
  }

  if (isFailed(item) && retrying === null && !attachAnyway) {
    const cause = failureCondition(item);
    const agentProblem = agentUnavailable(item);
    return (
      <div className="page narrow">
        <SessionHeader item={item} who={who}>{deleteButton}</SessionHeader>
        <div className="card notice notice-error" role="alert">
          <h2>{agentProblem ? "The agent cannot start" : "Provisioning failed"}</h2>
          <p className="failure-reason">
            <strong>{cause?.reason || "Unknown reason"}</strong>
            {cause?.message ? ` — ${cause.message}` : ""}
          </p>
          {agentProblem && (
            <p className="hint">
              Once the agent can start (install it from its card on the{" "}
              <Link href="/sandbox">sessions page</Link>), this page opens its terminal by
              itself; or start it again now.
            </p>
          )}
          {agentProblem && refusal && (
            <p className="form-error">Tried again: {refusal}</p>
          )}
          {retryError && <p className="form-error">{retryError}</p>}
          <div className="notice-actions">
            {agentProblem && (
              <button
                type="button"
                className="btn btn-primary"
                onClick={() => {
                  setRefusal(null);
                  setAttachAnyway(true);
                }}
              >
                Start the agent again
              </button>
            )}
            <button
              type="button"
              className={agentProblem ? "btn" : "btn btn-primary"}
              onClick={() => void deleteAndRetry(item)}
            >
              Delete + retry
            </button>
          </div>
        </div>
        <Waterfall item={item} />
        {confirmDialog}
      </div>
    );
  }

  if ((!isAttachable(item) && !attachAnyway) || retrying !== null) {
    return (
      <div className="page narrow">
        <SessionHeader item={item} who={who}>{deleteButton}</SessionHeader>
        <section className="card provisioning" aria-labelledby="prov-title" aria-busy="true">
          <h2 id="prov-title">Provisioning</h2>
          <p className="muted" role="status">
            {retrying ?? "Preparing the sandbox; this page updates by itself."}
          </p>
          <Waterfall item={item} />
          <p className="poll-error" aria-live="polite">
            {pollError ? `Server not answering (${pollError}); still trying.` : "\u00a0"}
          </p>
        </section>
        {confirmDialog}
      </div>
    );
  }

  const allTabs: TerminalTab[] = [
    { key: "primary", label: agentLabel(item.agent || "Terminal"), attachUrl: item.attachUrl },
    ...tabs,
  ];

  return (
    <div className="page session-live">
      <SessionHeader item={item} who={who} live={liveInfo}>
        <button type="button" className="btn" onClick={() => setShareOpen(true)}>
          Share
        </button>
        <button
          type="button"
          className="btn"
          onClick={() => void openRescue()}
          disabled={rescueBusy}
        >
          {rescueBusy ? "Opening…" : "Rescue shell"}
        </button>
        <button
          type="button"
          className="btn"
          aria-label="Open on another device"
          title="Open on another device"
          onClick={() => setSharing(true)}
        >
          <span className="wide-only">Open on another device</span>
          <span className="narrow-only" aria-hidden>
            Device
          </span>
        </button>
        {deleteButton}
      </SessionHeader>
      {tabError && (
        <p className="form-error" role="alert">
          {tabError}
        </p>
      )}
      {allTabs.length > 1 && (
        <div className="tabs" role="tablist" aria-label="Terminals">
          {allTabs.map((tab) => (
            <div key={tab.key} className="tab-wrap" role="presentation">
              <button
                type="button"
                role="tab"
                id={`tab-${tab.key}`}
                aria-selected={activeTab === tab.key}
                aria-controls={`panel-${tab.key}`}
                className="tab"
                onClick={() => setActiveTab(tab.key)}
              >
                {tab.label}
              </button>
              {tab.terminalId && (
                <button
                  type="button"
                  className="tab-close"
                  aria-label={`Close ${tab.label}`}
                  title={`Close ${tab.label}`}
                  onClick={() => void closeTab(tab)}
                >
                  ×
                </button>
              )}
            </div>
          ))}
        </div>
      )}
      <Suspense fallback={<p className="muted">Loading terminal…</p>}>
        {allTabs.map((tab) => (
          <div
            key={tab.key}
            id={`panel-${tab.key}`}
            role={allTabs.length > 1 ? "tabpanel" : undefined}
            aria-labelledby={allTabs.length > 1 ? `tab-${tab.key}` : undefined}
            className="terminal-panel"
            hidden={activeTab !== tab.key}
          >
            <TerminalView
              label={tab.label}
              attachUrl={tab.attachUrl}
              active={activeTab === tab.key}
              primary={!tab.terminalId}
              prefs={prefs}
              onPrefs={setPrefs}
              onConnectionState={tab.terminalId ? undefined : onConnectionState}
              onControl={tab.terminalId ? undefined : onControl}
              onCloseTab={tab.terminalId ? () => void closeTab(tab) : undefined}
              onResize={(size) =>
                tab.terminalId
                  ? api.resizeTerminal(id, tab.terminalId, size)
                  : api.resizeSession(id, size)
              }
            />
          </div>
        ))}
      </Suspense>
      {shareOpen && <ShareDialog sessionId={item.id} onClose={() => setShareOpen(false)} />}
      {sharing && <DeviceLinkDialog next={sessionPath(item.id)} onClose={() => setSharing(false)} />}
      {confirmDialog}
    </div>
  );
}
