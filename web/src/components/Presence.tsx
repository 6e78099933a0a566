/**
 * Who is watching a session: one round avatar per viewer (initials of their email), from
 * the terminal's `viewers` control frames. Spectators (read-only) are drawn hollow.
 */
import type { ViewerInfo } from "../terminal/protocol";

/** "ann.lee@x.io" → "AL", "bob@x.io" → "B", "" → "?" */
export function initials(who: string): string {
  const local = who.split("@")[0] ?? "";
  const parts = local.split(/[._\-+\s]+/).filter(Boolean);
  const letters = parts.slice(0, 2).map((p) => p[0]!.toUpperCase());
  return letters.join("") || "?";
}

export function Presence({ viewers }: { viewers: ViewerInfo[] }) {
  if (viewers.length === 0) return null;
  const others = viewers.filter((v) => !v.you).length;
  const summary =
    others === 0 ? "Only you are watching" : `${others} other${others === 1 ? "" : "s"} watching`;
  return (
    <div className="presence" role="group" aria-label="Watching this session" data-testid="presence">
      <ul className="presence-list">
        {viewers.map((v) => {
          const name = v.who || "someone";
          const label = `${name}${v.you ? " (you)" : ""}${v.mode === "read" ? ", view only" : ""}`;
          return (
            <li
              key={v.id}
              className={`avatar${v.mode === "read" ? " avatar-read" : ""}${v.you ? " avatar-you" : ""}`}
              title={label}
              aria-label={label}
            >
              <span aria-hidden>{initials(v.who)}</span>
            </li>
          );
        })}
      </ul>
      <span className="presence-summary muted">{summary}</span>
    </div>
  );
}
