/**
 * Reconnect timing and attach URL building, kept free of the DOM so they can be tested
 * directly: the schedule is part of the console's promise (1, 2, 4, 8, 16, then 30 s).
 */
export const BACKOFF_SECONDS: readonly number[] = [1, 2, 4, 8, 16, 30];

/** Delay before reconnect attempt `attempt` (0-based); it stays at 30 s after the fifth. */
export function backoffDelayMs(attempt: number): number {
  const index = Math.min(Math.max(0, Math.floor(attempt)), BACKOFF_SECONDS.length - 1);
  return (BACKOFF_SECONDS[index] ?? 30) * 1000;
}

/** `attachUrl` is a path; the socket goes to the page's own host, so the cookie rides along. */
export function attachSocketUrl(attachUrl: string, location: Pick<Location, "protocol" | "host">) {
  if (/^wss?:\/\//.test(attachUrl)) return attachUrl;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const path = attachUrl.startsWith("/") ? attachUrl : `/${attachUrl}`;
  return `${scheme}://${location.host}${path}`;
}
