/**
 * One viewer's attach socket with automatic reconnection. The server sends the replay as
 * the first binary frame of every connection, so the owner is told which frame is the
 * replay and resets its screen only then: the old screen stays visible while reconnecting
 * and nothing is shown twice afterwards.
 */
import { backoffDelayMs } from "./backoff";

export type ConnectionState = "connecting" | "open" | "reconnecting" | "ended";

export interface ConnectionHandlers {
  onOutput(data: Uint8Array | string, isReplay: boolean): void;
  onState(state: ConnectionState, detail: { attempt: number; delayMs: number }): void;
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
/** Close codes meaning "the process ended": reconnecting would not bring it back. */
const ENDED_CODES = new Set([1000, 1001]);

export class AttachConnection {
  private socket: SocketLike | null = null;
  private attempt = 0;
  private timer: unknown = null;
  private disposed = false;
  private awaitingReplay = true;
  private readonly createSocket: (url: string) => SocketLike;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (handle: unknown) => void;

  constructor(private readonly options: ConnectionOptions) {
    this.createSocket = options.createSocket ?? ((url) => new WebSocket(url) as SocketLike);
    this.setTimer = options.setTimer ?? ((fn, ms) => window.setTimeout(fn, ms));
    this.clearTimer = options.clearTimer ?? ((h) => window.clearTimeout(h as number));
  }

  get isOpen(): boolean {
    return this.socket?.readyState === OPEN;
  }

  start(): void {
    this.disposed = false;
    this.attempt = 0;
    this.open("connecting");
  }

  /** Reconnect now (the "Reconnect" button after the process ended). */
  reconnectNow(): void {
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
    this.dropSocket();
    this.attempt = 0;
    this.open("connecting");
  }

  send(data: string | Uint8Array): boolean {
    if (!this.socket || this.socket.readyState !== OPEN) return false;
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
    this.awaitingReplay = true;
    let socket: SocketLike;
    try {
      socket = this.createSocket(this.options.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.options.handlers.onState("open", { attempt: 0, delayMs: 0 });
    };
    socket.onmessage = (ev: MessageEvent) => {
      const payload =
        typeof ev.data === "string" ? ev.data : new Uint8Array(ev.data as ArrayBuffer);
      const isReplay = this.awaitingReplay;
      this.awaitingReplay = false;
      this.options.handlers.onOutput(payload, isReplay);
    };
    socket.onclose = (ev: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (ENDED_CODES.has(ev.code)) {
        this.options.handlers.onState("ended", { attempt: this.attempt, delayMs: 0 });
        return;
      }
      this.scheduleReconnect();
    };
    socket.onerror = () => {
      // onclose follows and decides what to do
    };
  }

  private scheduleReconnect(): void {
    if (this.disposed) return;
    const delayMs = backoffDelayMs(this.attempt);
    this.options.handlers.onState("reconnecting", { attempt: this.attempt, delayMs });
    this.attempt += 1;
    this.timer = this.setTimer(() => {
      this.timer = null;
      this.open("reconnecting");
    }, delayMs);
  }
}
