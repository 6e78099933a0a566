/**
 * `/sandbox/<id>?share=<token>`: a session someone shared. What the link opens comes from
 * `GET /shared/{id}?share=`; the terminal attaches with the same token. A view-only link
 * shows a badge and sends nothing (the server drops it anyway); a revoked or expired
 * link says so on the terminal (close 1008 `share-revoked` / `share-expired`) and is not
 * retried.
 */
import { Suspense, lazy, useEffect, useState } from "react";
import { ApiError, type SharedSandbox, type WhoAmI } from "../api/client";
import { useApi } from "../api/context";
import { ActivityBadge, NotifyButton } from "../components/ActivityBadge";
import { Presence } from "../components/Presence";
import { activityTitle } from "../activity";
import { usePrefs, useTerminalLayout, useTitle } from "../hooks";
import { Link } from "../router";
import { withQuery } from "../terminal/protocol";
import { useLiveInfo } from "./SessionPage";

const TerminalView = lazy(() => import("../terminal/TerminalView"));

export function sharedAttachUrl(id: string, token: string): string {
  return withQuery(`/api/v1/sandbox/sessions/${encodeURIComponent(id)}/attach`, { share: token });
}

export function SharedSessionPage({
  id,
  token,
}: {
  id: string;
  token: string;
  who?: WhoAmI | null;
}) {
  const api = useApi();
  const [shared, setShared] = useState<SharedSandbox | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [prefs, setPrefs] = usePrefs();
  const { info, onControl } = useLiveInfo(shared?.name ?? id, `shared-${id}`);
  useTerminalLayout(shared !== null);
  useTitle(problem ? "Share link not valid" : activityTitle(shared?.name ?? id, info.activity));

  useEffect(() => {
    let current = true;
    api.getShared(id, token).then(
      (answer) => current && setShared(answer),
      (err: unknown) => {
        if (!current) return;
        if (err instanceof ApiError && err.status === 404) {
          setProblem(
            "This link is not valid: it was revoked, it expired, or it is for another organisation.",
          );
        } else setProblem(err instanceof Error ? err.message : String(err));
      },
    );
    return () => {
      current = false;
    };
  }, [api, id, token]);

  if (problem) {
    return (
      <div className="page narrow">
        <div className="card notice notice-error" role="alert">
          <h1 className="page-title">Cannot open this shared session</h1>
          <p>{problem}</p>
          <Link href="/sandbox" className="btn btn-primary">
            Back to sessions
          </Link>
        </div>
      </div>
    );
  }
  if (shared === null) {
    return (
      <div className="page narrow" aria-busy="true">
        <p className="muted">Opening the shared session…</p>
      </div>
    );
  }
  const readOnly = shared.mode !== "write";
  return (
    <div className="page session-live">
      <div className="session-head">
        <div className="session-head-text">
          <Link href="/sandbox" className="back-link">
            ← Sessions
          </Link>
          <h1 className="session-title">
            {shared.name}{" "}
            {readOnly ? (
              <span className="badge badge-view-only" data-testid="view-only">
                view only
              </span>
            ) : (
              <span className="badge">shared</span>
            )}
          </h1>
          <p className="session-meta">
            {shared.agent} · shared by {shared.owner} · until{" "}
            <time dateTime={shared.expiresAt}>{new Date(shared.expiresAt).toLocaleString()}</time>
          </p>
          {(info.activity || info.viewers.length > 0) && (
            <div className="session-live-info">
              {info.activity && <ActivityBadge state={info.activity} />}
              {info.activity && <NotifyButton />}
              <Presence viewers={info.viewers} />
            </div>
          )}
        </div>
      </div>
      <Suspense fallback={<p className="muted">Loading terminal…</p>}>
        <div className="terminal-panel">
          <TerminalView
            label={shared.agent}
            attachUrl={sharedAttachUrl(id, token)}
            active
            readOnly={readOnly}
            prefs={prefs}
            onPrefs={setPrefs}
            onControl={onControl}
            // a spectator's size never reaches the PTY; a write link resizes over v2 only
            onResize={async () => undefined}
          />
        </div>
      </Suspense>
    </div>
  );
}
