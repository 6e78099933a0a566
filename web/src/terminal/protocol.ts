/**
 * The `sandbox.v2` attach subprotocol (docs/terminal.md, plan-issue10.md), kept free of the
 * DOM and of sockets so it can be tested directly.
 *
 * Server → client: binary frames are an 8-byte big-endian stream offset followed by the
 * payload; text frames are JSON controls (`hello`, `snapshot`, `resume`, `pong`, `title`,
 * `viewers`, `activity`, `size`, `exit`). Client → server: binary is input, text is a JSON
 * control (`resize`, `ping`, `ack`).
 */
export const V2_PROTOCOL = "sandbox.v2";
export const HEADER_BYTES = 8;
/** The server's default flow-control window when `hello` does not say (1 MiB). */
export const DEFAULT_WINDOW = 1024 * 1024;

export type Activity = "busy" | "waiting" | "idle";
export type ViewerMode = "write" | "read";

export interface ViewerInfo {
  id: string;
  who: string;
  mode: ViewerMode;
  you: boolean;
}

export type Control =
  | {
      type: "hello";
      viewer: string;
      mode: ViewerMode;
      rows: number;
      cols: number;
      window: number;
      activity?: Activity;
      title: string;
    }
  | { type: "snapshot"; seq: number; reason: string }
  | { type: "resume"; seq: number }
  | { type: "pong"; t: number }
  | { type: "title"; title: string }
  | { type: "viewers"; viewers: ViewerInfo[] }
  | { type: "activity"; state: Activity }
  | { type: "size"; rows: number; cols: number }
  | { type: "exit"; code: number | null };

export interface BinaryFrame {
  /** The stream offset of the payload's first byte (for a snapshot: the offset it shows). */
  start: number;
  payload: Uint8Array;
}

/** Split a binary frame into its offset header and payload; null when it is too short. */
export function parseBinaryFrame(data: ArrayBuffer | Uint8Array): BinaryFrame | null {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.byteLength < HEADER_BYTES) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  // two 32-bit halves: exact up to 2^53, far beyond any stream a session writes
  const start = view.getUint32(0) * 2 ** 32 + view.getUint32(4);
  return { start, payload: bytes.subarray(HEADER_BYTES) };
}

/** Build a binary frame (tests, and any peer that speaks the protocol). */
export function encodeBinaryFrame(start: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, Math.floor(start / 2 ** 32));
  view.setUint32(4, start % 2 ** 32);
  out.set(payload, HEADER_BYTES);
  return out;
}

const ACTIVITIES: ReadonlySet<string> = new Set(["busy", "waiting", "idle"]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const num = (value: unknown, fallback = 0): number =>
  typeof value === "number" && Number.isFinite(value) ? value : fallback;
const str = (value: unknown): string => (typeof value === "string" ? value : "");

export function isActivity(value: unknown): value is Activity {
  return typeof value === "string" && ACTIVITIES.has(value);
}

function viewerOf(value: unknown): ViewerInfo | null {
  if (!isRecord(value)) return null;
  return {
    id: str(value.id),
    who: str(value.who),
    mode: value.mode === "read" ? "read" : "write",
    you: value.you === true,
  };
}

/**
 * A text frame as a known control, or null for what this console does not use (unknown
 * types are ignored, as the protocol says; so is a malformed frame from the server).
 */
export function parseControl(text: string): Control | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isRecord(value)) return null;
  switch (value.type) {
    case "hello":
      return {
        type: "hello",
        viewer: str(value.viewer),
        mode: value.mode === "read" ? "read" : "write",
        rows: num(value.rows),
        cols: num(value.cols),
        window: num(value.window, DEFAULT_WINDOW) || DEFAULT_WINDOW,
        ...(isActivity(value.activity) ? { activity: value.activity } : {}),
        title: str(value.title),
      };
    case "snapshot":
      return { type: "snapshot", seq: num(value.seq), reason: str(value.reason) };
    case "resume":
      return { type: "resume", seq: num(value.seq) };
    case "pong":
      return { type: "pong", t: num(value.t) };
    case "title":
      return { type: "title", title: str(value.title) };
    case "viewers":
      return {
        type: "viewers",
        viewers: Array.isArray(value.viewers)
          ? value.viewers.map(viewerOf).filter((v): v is ViewerInfo => v !== null)
          : [],
      };
    case "activity":
      return isActivity(value.state) ? { type: "activity", state: value.state } : null;
    case "size":
      return { type: "size", rows: num(value.rows), cols: num(value.cols) };
    case "exit":
      return { type: "exit", code: typeof value.code === "number" ? value.code : null };
    default:
      return null;
  }
}

export const resizeControl = (rows: number, cols: number) =>
  JSON.stringify({ type: "resize", rows, cols });
export const pingControl = (t: number) => JSON.stringify({ type: "ping", t });
export const ackControl = (seq: number) => JSON.stringify({ type: "ack", seq });

/**
 * Where a live frame fits in the stream the viewer has: the bytes to skip (already
 * written: a frame overlapping what a resume delivered) and the new end. A frame past the
 * end (a hole, which the server marks with a snapshot instead) is written as it is.
 */
export function placeFrame(
  have: number | null,
  start: number,
  length: number,
): { skip: number; end: number } {
  const end = start + length;
  if (have === null || start >= have) return { skip: 0, end };
  if (end <= have) return { skip: length, end: have };
  return { skip: have - start, end };
}

/** `url` with `since` (and any other) query parameters set; works for ws:// and paths. */
export function withQuery(url: string, params: Record<string, string | number | null>): string {
  const parsed = new URL(url, "http://relative.invalid");
  for (const [key, value] of Object.entries(params)) {
    if (value === null) parsed.searchParams.delete(key);
    else parsed.searchParams.set(key, String(value));
  }
  if (parsed.origin === "http://relative.invalid") {
    return `${parsed.pathname}${parsed.search}${parsed.hash}`;
  }
  return parsed.toString();
}
