/**
 * One viewer's attach socket with honest reconnection. The server sends the replay as
 * the first binary frame of every connection, so the owner is told which frame is the
 * replay and resets its screen only then: the old screen stays visible while reconnecting
 * and nothing is shown twice afterwards.
 *
 * What a close means decides what happens next (see `classifyClose`):
 * - the agent exited (1000, or 1001 "session exited"): stop; the owner offers a restart;
 * - a permanent refusal (1008 policy, 1011 cannot start / provisioning failed): stop and
 *   say why; retrying would only be refused again;
 * - anything else (a dropped network, a server restart, 1013 "not ready yet"): retry
 *   with the back-off, which starts over only once a frame has arrived, because a socket
 *   that opens and is then refused has not reached the terminal.
 */
import { backoffDelayMs } from "./backoff";

/** `open` means attached: the replay frame has arrived, not merely the socket opened. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "ended" | "refused";

export interface StateDetail {
  attempt: number;
  delayMs: number;
  /** The close code and reason that led to this state, when a close did. */
  code?: number;
  reason?: string;
  /** The agent's exit code, when the server said it (`agent exited with code N`). */
  exitCode?: number;
}

export interface ConnectionHandlers {
  onOutput(data: Uint8Array | string, isReplay: boolean): void;
  onState(state: ConnectionState, detail: StateDetail): void;
}

export interface SocketLike {
  binaryType: BinaryType;
  readyState: number;
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
  createSocket?: (url: string) => SocketLike;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

const OPEN = 1;
/** Close codes the server uses to refuse for good: policy (auth, Origin), and an agent
 * or sandbox that cannot start. */
export const REFUSAL_CODES: ReadonlySet<number> = new Set([1008, 1011]);
const EXIT_REASON = /code (-?\d+)/;

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

export class AttachConnection {
  private socket: SocketLike | null = null;
  private attempt = 0;
  private timer: unknown = null;
  private disposed = false;
  private attached = false;
  private readonly createSocket: (url: string) => SocketLike;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (handle: unknown) => void;

  constructor(private readonly options: ConnectionOptions) {
    this.createSocket = options.createSocket ?? ((url) => new WebSocket(url) as SocketLike);
    this.setTimer = options.setTimer ?? ((fn, ms) => window.setTimeout(fn, ms));
    this.clearTimer = options.clearTimer ?? ((h) => window.clearTimeout(h as number));
  }

  /** The server has attached this viewer to the terminal (its replay arrived). */
  get isAttached(): boolean {
    return this.attached && this.socket?.readyState === OPEN;
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
   * reading it yet (and may be about to refuse). */
  send(data: string | Uint8Array): boolean {
    if (!this.isAttached || !this.socket) return false;
    this.socket.send(data);
    return true;
  }

  dispose(): void {
    this.disposed = true;
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
    this.dropSocket();
  }

  private dropSocket(): void {
    const socket = this.socket;
    this.socket = null;
    this.attached = false;
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
    let socket: SocketLike;
    try {
      socket = this.createSocket(this.options.url);
    } catch {
      this.scheduleReconnect({});
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => {
      // Not attached yet: the server may still wait for the sandbox, or refuse.
    };
    socket.onmessage = (ev: MessageEvent) => {
      if (this.socket !== socket) return;
      const payload =
        typeof ev.data === "string" ? ev.data : new Uint8Array(ev.data as ArrayBuffer);
      const isReplay = !this.attached;
      if (isReplay) {
        // A frame arrived: the terminal is really there, so a later drop starts the
        // back-off from the beginning again.
        this.attached = true;
        this.attempt = 0;
      }
      this.options.handlers.onOutput(payload, isReplay);
      if (isReplay) this.options.handlers.onState("open", { attempt: 0, delayMs: 0 });
    };
    socket.onclose = (ev: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.attached = false;
      const code = ev.code;
      const reason = ev.reason ?? "";
      const kind = classifyClose(code, reason);
      if (kind === "exited") {
        const exitCode = exitCodeOf(reason);
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
