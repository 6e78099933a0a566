/**
 * Agent activity in the console (docs/activity.md): the state a terminal reports
 * (`busy`, `waiting` for input, `idle`) in the tab title, and a browser notification when
 * a session that is not in view starts waiting. Permission is asked for only from a
 * click (browsers ignore or penalise a prompt without one).
 */
import type { ActivityState } from "./api/client";

export const ACTIVITY_MARK: Record<ActivityState, string> = {
  busy: "◐",
  waiting: "●",
  idle: "○",
};

export const ACTIVITY_LABEL: Record<ActivityState, string> = {
  busy: "busy",
  waiting: "waiting for input",
  idle: "idle",
};

export function isActivityState(value: unknown): value is ActivityState {
  return value === "busy" || value === "waiting" || value === "idle";
}

/** The page title's first part: `● waiting — name` (a row of tabs shows who needs you). */
export function activityTitle(name: string, activity: ActivityState | null | undefined): string {
  if (!activity) return name;
  return `${ACTIVITY_MARK[activity]} ${activity} — ${name}`;
}

/** Notify only on the change into `waiting`, and only when the page is not in view. */
export function shouldNotify(
  previous: ActivityState | null | undefined,
  next: ActivityState,
  hidden: boolean,
): boolean {
  return next === "waiting" && previous !== "waiting" && previous != null && hidden;
}

type Permission = "default" | "granted" | "denied" | "unsupported";

export function notificationPermission(): Permission {
  if (typeof window === "undefined" || !("Notification" in window)) return "unsupported";
  return window.Notification.permission;
}

/** Ask for permission: call from a click handler only. */
export async function askNotificationPermission(): Promise<Permission> {
  if (notificationPermission() === "unsupported") return "unsupported";
  try {
    return await window.Notification.requestPermission();
  } catch {
    return notificationPermission();
  }
}

/** Raise "<name> is waiting for input"; clicking it brings this tab forward. */
export function notifyWaiting(name: string, tag: string): void {
  if (notificationPermission() !== "granted") return;
  try {
    const note = new window.Notification(`${name} is waiting for input`, {
      body: "The agent stopped and is asking for you.",
      tag: `sandbox-waiting-${tag}`,
    });
    note.onclick = () => {
      window.focus();
      note.close();
    };
  } catch {
    // some mobile browsers allow notifications only from a service worker
  }
}
