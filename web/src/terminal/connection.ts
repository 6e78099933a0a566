/**
 * One viewer's attach socket with honest reconnection. It offers the `sandbox.v2`
 * subprotocol and falls back to the raw protocol when the server answers without it (an
 * older server). Either way the owner is told which output is a replay (v2: a snapshot
 * or a resume; raw: the first binary frame of a connection), so it resets its screen only
 * then, and ignores what the terminal answers while it writes one: the old screen stays
 * visible while reconnecting and nothing is shown twice afterwards.
 *
 * v2 bookkeeping: the stream offset of the last byte received is kept, a reconnect asks
 * for `?since=<offset>` (the server resumes with exactly the missing bytes, or sends a
 * snapshot when it no longer holds them), what the terminal has rendered is acknowledged
 * (`ack`, coalesced), and a `ping` goes out every 20 s.
 *
 * What a close means decides what happens next (see `classifyClose`):
 * - the agent exited (1000, or 1001 "session exited"): stop; the owner offers a restart;
 * - a permanent refusal (1008 policy, share revoked or expired; 1011 cannot start /
 *   provisioning failed): stop and say why; retrying would only be refused again;
 * - anything else (a dropped network, a server restart, 1013 "not ready yet"): retry
 *   with the back-off, which starts over only once a frame has arrived, because a socket
 *   that opens and is then refused has not reached the terminal.
 */
import { backoffDelayMs } from "./backoff";
import {
  DEFAULT_WINDOW,
  V2_PROTOCOL,
  ackControl,
  parseBinaryFrame,
  parseControl,
  pingControl,
  placeFrame,
  resizeControl,
  withQuery,
  type Control,
  type ViewerMode,
} from "./protocol";

/** `open` means attached: the replay has arrived, not merely the socket opened. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "ended" | "refused";

export interface StateDetail {
  attempt: number;
  delayMs: number;
  /** The close code and reason that led to this state, when a close did. */
  code?: number;
  reason?: string;
  /** The agent's exit code, when the server said it (`exit` control, or `… code N`). */
  exitCode?: number;
}

/**
 * `snapshot`: the whole screen, written on a reset terminal (v2 snapshot, or the raw
 * protocol's replay frame); `resume`: the bytes missed while away, written as they are;
 * `live`: output as it happens. A resume and the raw protocol's replay are written with
 * input gated; a sandbox.v2 snapshot (screen state, never a query) is not.
 */
export type OutputKind = "snapshot" | "resume" | "live";

export interface ConnectionHandlers {
  /** Output to show. The owner calls `written` from the terminal's write callback, which
   * acknowledges the bytes to the server (v2). */
  onOutput(data: Uint8Array | string, kind: OutputKind, written: () => void): void;
  onState(state: ConnectionState, detail: StateDetail): void;
  /** v2 controls other than snapshot/resume: hello, title, viewers, activity, size, exit. */
  onControl?(control: Control): void;
}

export interface SocketLike {
  binaryType: BinaryType;
  readyState: number;
  /** The subprotocol the server accepted ("" when none: the raw protocol). */
  protocol?: string;
  onopen: ((ev: Event) => unknown) | null;
  onmessage: ((ev: MessageEvent) => unknown) | null;
  onclose: ((ev: CloseEvent) => unknown) | null;
  onerror: ((ev: Event) => unknown) | null;
  send(data: string | ArrayBufferLike | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export interface ConnectionOptions {
  url: string;
  handlers: ConnectionHandlers;
  /** Subprotocols to offer; `[]` attaches raw. Defaults to `["sandbox.v2"]`. */
  protocols?: string[];
  createSocket?: (url: string, protocols: string[]) => SocketLike;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
  now?: () => number;
}

const OPEN = 1;
/** Close codes the server uses to refuse for good: policy (auth, Origin, a revoked or
 * expired share), and an agent or sandbox that cannot start. */
export const REFUSAL_CODES: ReadonlySet<number> = new Set([1008, 1011]);
const EXIT_REASON = /code (-?\d+)/;
export const PING_INTERVAL_MS = 20_000;
/** Acknowledgements are coalesced: sent after this delay, or at once past a quarter of
 * the window (so a fast stream never runs into the server's window). */
export const ACK_DELAY_MS = 100;

export type CloseKind = "exited" | "refused" | "transient";

/** What a close frame means for the viewer (the server's close reasons, plan-issue8.md). */
export function classifyClose(code: number, reason: string): CloseKind {
  if (code === 1000) return "exited";
  // 1001 is both "the session had already exited" and "the server is going away"
  if (code === 1001) return /exit/i.test(reason) ? "exited" : "transient";
  if (REFUSAL_CODES.has(code)) return "refused";
  return "transient";
}

/** The exit code in a close reason such as `agent exited with code 3`, if any. */
export function exitCodeOf(reason: string): number | undefined {
  const match = EXIT_REASON.exec(reason);
  return match ? Number(match[1]) : undefined;
}

type Pending = { kind: "snapshot" | "resume"; seq: number } | null;

export class AttachConnection {
  private socket: SocketLike | null = null;
  private attempt = 0;
  private timer: unknown = null;
  private disposed = false;
  private attached = false;
  private v2 = false;
  /** v2: the stream offset just past the last byte received (null: nothing yet). */
  private offset: number | null = null;
  private pending: Pending = null;
  private viewerMode: ViewerMode = "write";
  private window = DEFAULT_WINDOW;
  /** The offset the server counts this viewer's window from: the last ack sent, or where
   * the current snapshot/resume put it. */
  private ackSent = -1;
  private ackWanted = -1;
  private ackTimer: unknown = null;
  private pingTimer: unknown = null;
  private exitCode: number | undefined;
  private readonly protocols: string[];
  private readonly createSocket: (url: string, protocols: string[]) => SocketLike;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (handle: unknown) => void;
  private readonly now: () => number;

  constructor(private readonly options: ConnectionOptions) {
    this.protocols = options.protocols ?? [V2_PROTOCOL];
    this.createSocket =
      options.createSocket ??
      ((url, protocols) =>
        (protocols.length ? new WebSocket(url, protocols) : new WebSocket(url)) as SocketLike);
    this.setTimer = options.setTimer ?? ((fn, ms) => window.setTimeout(fn, ms));
    this.clearTimer = options.clearTimer ?? ((h) => window.clearTimeout(h as number));
    this.now = options.now ?? (() => Date.now());
  }

  /** The server has attached this viewer to the terminal (its replay arrived). */
  get isAttached(): boolean {
    return this.attached && this.socket?.readyState === OPEN;
  }

  /** The server accepted `sandbox.v2` on the current (or last) socket. */
  get isV2(): boolean {
    return this.v2;
  }

  /** v2: the server attached this viewer read-only (a spectator): input is not sent. */
  get readOnly(): boolean {
    return this.v2 && this.viewerMode === "read";
  }

  /** v2: the stream offset the next reconnect resumes from. */
  get streamOffset(): number | null {
    return this.offset;
  }

  /** The URL the next socket opens: v2 resumes where the last one stopped. */
  nextUrl(): string {
    if (this.v2 && this.offset !== null) return withQuery(this.options.url, { since: this.offset });
    return this.options.url;
  }

  start(): void {
    this.disposed = false;
    this.attempt = 0;
    this.open("connecting");
  }

  /** Connect again at once: "Reconnect now", "Try again", or "Restart agent" (attaching
   * the primary terminal after its agent exited starts the agent again). */
  reconnectNow(): void {
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
    this.dropSocket();
    this.attempt = 0;
    this.open("connecting");
  }

  /** Input goes only to an attached terminal: before the replay the server is not
   * reading it yet (and may be about to refuse); a read-only viewer sends none. */
  send(data: string | Uint8Array): boolean {
    if (!this.isAttached || !this.socket || this.readOnly) return false;
    if (this.v2 && typeof data === "string") {
      // v2: text frames are controls; input is always binary
      this.socket.send(new TextEncoder().encode(data));
    } else {
      this.socket.send(data);
    }
    return true;
  }

  /** v2: tell the server the screen's size (a control frame). False when this socket
   * cannot (raw: the owner posts it over REST; read-only: spectators never resize). */
  sendResize(rows: number, cols: number): boolean {
    if (!this.v2 || !this.isAttached || !this.socket || this.readOnly) return false;
    this.socket.send(resizeControl(rows, cols));
    return true;
  }

  dispose(): void {
    this.disposed = true;
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
    this.dropSocket();
  }

  private stopTimers(): void {
    if (this.ackTimer !== null) this.clearTimer(this.ackTimer);
    if (this.pingTimer !== null) this.clearTimer(this.pingTimer);
    this.ackTimer = this.pingTimer = null;
  }

  private dropSocket(): void {
    const socket = this.socket;
    this.socket = null;
    this.attached = false;
    this.stopTimers();
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close();
    } catch {
      // already closed
    }
  }

  private open(state: ConnectionState): void {
    if (this.disposed) return;
    this.options.handlers.onState(state, { attempt: this.attempt, delayMs: 0 });
    this.attached = false;
    this.pending = null;
    this.exitCode = undefined;
    this.ackSent = this.ackWanted = -1;
    let socket: SocketLike;
    try {
      socket = this.createSocket(this.nextUrl(), this.protocols);
    } catch {
      this.scheduleReconnect({});
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => {
      // Not attached yet: the server may still wait for the sandbox, or refuse.
      if (this.socket === socket) this.v2 = socket.protocol === V2_PROTOCOL;
    };
    socket.onmessage = (ev: MessageEvent) => {
      if (this.socket !== socket) return;
      this.v2 = socket.protocol === V2_PROTOCOL;
      if (this.v2) this.receiveV2(socket, ev.data as string | ArrayBuffer);
      else this.receiveRaw(ev.data as string | ArrayBuffer);
    };
    socket.onclose = (ev: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.attached = false;
      this.stopTimers();
      const code = ev.code;
      const reason = ev.reason ?? "";
      const kind = classifyClose(code, reason);
      if (kind === "exited") {
        const exitCode = this.exitCode ?? exitCodeOf(reason);
        // a restart is a new stream: the next attach starts from a snapshot
        this.offset = null;
        this.options.handlers.onState("ended", {
          attempt: this.attempt,
          delayMs: 0,
          code,
          reason,
          ...(exitCode === undefined ? {} : { exitCode }),
        });
        return;
      }
      if (kind === "refused") {
        this.options.handlers.onState("refused", { attempt: this.attempt, delayMs: 0, code, reason });
        return;
      }
      this.scheduleReconnect({ code, reason });
    };
    socket.onerror = () => {
      // onclose follows and decides what to do
    };
  }

  private markAttached(): void {
    if (this.attached) return;
    // A frame arrived: the terminal is really there, so a later drop starts the
    // back-off from the beginning again.
    this.attached = true;
    this.attempt = 0;
    this.options.handlers.onState("open", { attempt: 0, delayMs: 0 });
  }

  private receiveRaw(data: string | ArrayBuffer): void {
    const payload = typeof data === "string" ? data : new Uint8Array(data);
    const isReplay = !this.attached;
    if (isReplay) {
      this.attached = true;
      this.attempt = 0;
    }
    this.options.handlers.onOutput(payload, isReplay ? "snapshot" : "live", () => undefined);
    if (isReplay) this.options.handlers.onState("open", { attempt: 0, delayMs: 0 });
  }

  private receiveV2(socket: SocketLike, data: string | ArrayBuffer): void {
    if (typeof data === "string") {
      const control = parseControl(data);
      if (!control) return;
      switch (control.type) {
        case "hello":
          this.viewerMode = control.mode;
          this.window = control.window;
          this.schedulePing(socket);
          break;
        case "snapshot":
          this.pending = { kind: "snapshot", seq: control.seq };
          return;
        case "resume":
          this.pending = { kind: "resume", seq: control.seq };
          // a resume with nothing missed may carry no frame: attached now
          this.markAttached();
          return;
        case "exit":
          this.exitCode = control.code ?? undefined;
          break;
        case "pong":
          return;
        default:
          break;
      }
      this.options.handlers.onControl?.(control);
      return;
    }
    const frame = parseBinaryFrame(data);
    if (!frame) return;
    const pending = this.pending;
    this.pending = null;
    let payload = frame.payload;
    let kind: OutputKind = "live";
    let end: number;
    if (pending?.kind === "snapshot" || (!pending && !this.attached)) {
      // the screen as of offset `seq`; what follows continues from there
      end = pending?.seq ?? frame.start;
      kind = "snapshot";
      this.ackSent = end - 1;
    } else if (pending?.kind === "resume") {
      end = frame.start + payload.byteLength;
      kind = "resume";
      if (this.ackSent < 0) this.ackSent = frame.start - 1;
    } else {
      const placed = placeFrame(this.offset, frame.start, payload.byteLength);
      end = placed.end;
      if (placed.skip >= payload.byteLength) {
        this.offset = end;
        return;
      }
      payload = payload.subarray(placed.skip);
    }
    this.offset = end;
    const wasAttached = this.attached;
    this.attached = true;
    this.attempt = 0;
    this.options.handlers.onOutput(payload, kind, () => {
      if (this.socket === socket) this.ack(socket, end);
    });
    if (!wasAttached) this.options.handlers.onState("open", { attempt: 0, delayMs: 0 });
  }

  /** Acknowledge rendering up to `end`: coalesced, but never near the window's edge. */
  private ack(socket: SocketLike, end: number): void {
    if (end <= this.ackWanted) return;
    this.ackWanted = end;
    const flush = () => {
      this.ackTimer = null;
      if (this.socket !== socket || socket.readyState !== OPEN) return;
      if (this.ackWanted <= this.ackSent) return;
      this.ackSent = this.ackWanted;
      socket.send(ackControl(this.ackSent));
    };
    if (this.ackWanted - this.ackSent >= this.window / 4) {
      if (this.ackTimer !== null) this.clearTimer(this.ackTimer);
      flush();
      return;
    }
    if (this.ackTimer === null) this.ackTimer = this.setTimer(flush, ACK_DELAY_MS);
  }

  private schedulePing(socket: SocketLike): void {
    if (this.pingTimer !== null) this.clearTimer(this.pingTimer);
    this.pingTimer = this.setTimer(() => {
      this.pingTimer = null;
      if (this.socket !== socket || socket.readyState !== OPEN) return;
      socket.send(pingControl(this.now()));
      this.schedulePing(socket);
    }, PING_INTERVAL_MS);
  }

  private scheduleReconnect(close: { code?: number; reason?: string }): void {
    if (this.disposed) return;
    const delayMs = backoffDelayMs(this.attempt);
    this.options.handlers.onState("reconnecting", { attempt: this.attempt, delayMs, ...close });
    this.attempt += 1;
    this.timer = this.setTimer(() => {
      this.timer = null;
      this.open("reconnecting");
    }, delayMs);
  }
}
