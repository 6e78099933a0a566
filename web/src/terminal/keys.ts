/**
 * The on-screen key row: touch keyboards have no Esc, Tab, Ctrl or arrows, so the console
 * offers them. Ctrl is sticky: it applies to the next key typed, then releases.
 */
export type RowKey = "Esc" | "Tab" | "Up" | "Down" | "Left" | "Right";

const ARROW_FINAL: Record<string, string> = { Up: "A", Down: "B", Right: "C", Left: "D" };

/** Bytes for a row key; arrows follow the terminal's application-cursor mode. */
export function rowKeySequence(key: RowKey, applicationCursor: boolean): string {
  if (key === "Esc") return "\x1b";
  if (key === "Tab") return "\t";
  const final = ARROW_FINAL[key] ?? "A";
  return applicationCursor ? `\x1bO${final}` : `\x1b[${final}`;
}

/** Apply a sticky Ctrl to typed input: `c` → ETX (0x03), `[` → ESC, space → NUL. */
export function applyCtrl(data: string): string {
  if (data.length !== 1) return data;
  const code = data.toUpperCase().charCodeAt(0);
  if (code >= 0x40 && code <= 0x5f) return String.fromCharCode(code & 0x1f);
  if (data === " " || data === "@") return "\x00";
  if (data === "?") return "\x7f";
  return data;
}
