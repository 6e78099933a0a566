/**
 * The agent's activity on the session page (busy / waiting for input / idle), and the
 * one place the console asks to notify: a button, so the browser's prompt follows a click.
 */
import { useState } from "react";
import type { ActivityState } from "../api/client";
import {
  ACTIVITY_LABEL,
  ACTIVITY_MARK,
  askNotificationPermission,
  notificationPermission,
} from "../activity";

export function ActivityBadge({ state }: { state: ActivityState }) {
  return (
    <span
      className={`activity activity-${state}`}
      data-testid="activity"
      data-state={state}
      title={`The agent is ${ACTIVITY_LABEL[state]}`}
    >
      <span aria-hidden>{ACTIVITY_MARK[state]}</span> <span className="visually-hidden">Agent </span>
      {ACTIVITY_LABEL[state]}
    </span>
  );
}

export function NotifyButton() {
  const [permission, setPermission] = useState(notificationPermission);
  if (permission !== "default") return null;
  return (
    <button
      type="button"
      className="btn btn-small"
      title="Get a browser notification when this session waits for you while you are elsewhere"
      onClick={() => void askNotificationPermission().then(setPermission)}
    >
      Notify me
    </button>
  );
}
