import { describe, expect, it } from "vitest";
import {
  AttachConnection,
  classifyClose,
  exitCodeOf,
  type ConnectionState,
  type SocketLike,
  type StateDetail,
} from "./connection";

class FakeSocket implements SocketLike {
  binaryType: BinaryType = "blob";
  readyState = 0;
  onopen: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  onclose: ((ev: CloseEvent) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  sent: unknown[] = [];
  constructor(readonly url: string) {}
  send(data: string | ArrayBufferLike | Uint8Array) {
    this.sent.push(data);
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
  }
  receive(data: ArrayBuffer | string) {
    this.onmessage?.({ data } as MessageEvent);
  }
  drop(code: number, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason } as CloseEvent);
  }
}

function harness() {
  const sockets: FakeSocket[] = [];
  const timers: { fn: () => void; ms: number }[] = [];
  const states: [ConnectionState, number][] = [];
  const details: [ConnectionState, StateDetail][] = [];
  const output: [string, boolean][] = [];
  const conn = new AttachConnection({
    url: "ws://h/attach",
    createSocket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    setTimer: (fn, ms) => {
      timers.push({ fn, ms });
      return timers.length;
    },
    clearTimer: () => undefined,
    handlers: {
      onOutput: (data, isReplay) =>
        output.push([typeof data === "string" ? data : new TextDecoder().decode(data), isReplay]),
      onState: (state, detail) => {
        states.push([state, detail.delayMs]);
        details.push([state, detail]);
      },
    },
  });
  return { conn, sockets, timers, states, details, output };
}

const bytes = (s: string) => new TextEncoder().encode(s).buffer as ArrayBuffer;

describe("AttachConnection", () => {
  it("marks the first frame of every connection as the replay", () => {
    const h = harness();
    h.conn.start();
    h.sockets[0]!.open();
    expect(h.sockets[0]!.binaryType).toBe("arraybuffer");
    h.sockets[0]!.receive(bytes("$ ls\r\n"));
    h.sockets[0]!.receive(bytes("a b\r\n"));
    h.sockets[0]!.drop(1006);
    h.timers[0]!.fn();
    h.sockets[1]!.open();
    h.sockets[1]!.receive(bytes("$ ls\r\na b\r\n"));
    expect(h.output).toEqual([
      ["$ ls\r\n", true],
      ["a b\r\n", false],
      ["$ ls\r\na b\r\n", true],
    ]);
  });

  it("backs off 1, 2, 4, 8, 16, 30, 30 s while the server is away", () => {
    const h = harness();
    h.conn.start();
    for (let i = 0; i < 7; i += 1) {
      h.sockets[i]!.drop(1006);
      h.timers[i]!.fn();
    }
    expect(h.timers.map((t) => t.ms / 1000)).toEqual([1, 2, 4, 8, 16, 30, 30]);
    expect(h.states.filter(([s]) => s === "reconnecting").length).toBeGreaterThan(7);
  });

  it("resets the back-off only after a frame has arrived, not when the socket opens", () => {
    const h = harness();
    h.conn.start();
    // opened, then closed before any frame (the server turned it away): keep backing off
    for (let i = 0; i < 3; i += 1) {
      h.sockets[i]!.open();
      h.sockets[i]!.drop(1013, "sandbox not ready yet");
      h.timers[i]!.fn();
    }
    expect(h.timers.map((t) => t.ms / 1000)).toEqual([1, 2, 4]);
    expect(h.states.some(([s]) => s === "open")).toBe(false);
    // a frame arrives: attached, and the next drop starts from 1 s again
    h.sockets[3]!.open();
    h.sockets[3]!.receive(bytes("$ "));
    expect(h.states.at(-1)?.[0]).toBe("open");
    h.sockets[3]!.drop(1006);
    expect(h.timers[3]!.ms).toBe(1000);
  });

  it.each([
    [1011, "agent cannot start: binary qwen not found"],
    [1008, "origin not allowed"],
  ])("never retries a permanent refusal (close %i)", (code, reason) => {
    const h = harness();
    h.conn.start();
    h.sockets[0]!.open();
    h.sockets[0]!.drop(code, reason);
    expect(h.timers).toHaveLength(0);
    expect(h.sockets).toHaveLength(1);
    const [state, detail] = h.details.at(-1)!;
    expect(state).toBe("refused");
    expect(detail).toMatchObject({ code, reason });
    // only the user starts another attempt
    h.conn.reconnectNow();
    expect(h.sockets).toHaveLength(2);
  });

  it("stops when the agent exits, with its exit code, and sends only while attached", () => {
    const h = harness();
    h.conn.start();
    expect(h.conn.send("early")).toBe(false);
    h.sockets[0]!.open();
    expect(h.conn.send("before the replay")).toBe(false);
    expect(h.conn.isAttached).toBe(false);
    h.sockets[0]!.receive(bytes("$ "));
    expect(h.conn.isAttached).toBe(true);
    expect(h.conn.send("ls\r")).toBe(true);
    expect(h.sockets[0]!.sent).toEqual(["ls\r"]);
    h.sockets[0]!.drop(1000, "agent exited with code 3");
    const [state, detail] = h.details.at(-1)!;
    expect(state).toBe("ended");
    expect(detail.exitCode).toBe(3);
    expect(h.timers).toHaveLength(0);
    expect(h.conn.isAttached).toBe(false);
    // Restart agent: attach again
    h.conn.reconnectNow();
    expect(h.sockets).toHaveLength(2);
    expect(h.states.at(-1)?.[0]).toBe("connecting");
  });

  it("does nothing after dispose", () => {
    const h = harness();
    h.conn.start();
    h.conn.dispose();
    expect(h.sockets[0]!.onclose).toBeNull();
    expect(h.timers).toHaveLength(0);
  });
});

describe("close classification", () => {
  it("tells an exit from a refusal from a passing drop", () => {
    expect(classifyClose(1000, "agent exited with code 0")).toBe("exited");
    expect(classifyClose(1000, "")).toBe("exited");
    expect(classifyClose(1001, "session exited")).toBe("exited");
    expect(classifyClose(1001, "server shutting down")).toBe("transient");
    expect(classifyClose(1008, "unauthenticated")).toBe("refused");
    expect(classifyClose(1011, "provisioning failed: repo gone")).toBe("refused");
    expect(classifyClose(1012, "")).toBe("transient");
    expect(classifyClose(1013, "sandbox not ready yet")).toBe("transient");
    expect(classifyClose(1006, "")).toBe("transient");
  });

  it("reads the exit code from the close reason", () => {
    expect(exitCodeOf("agent exited with code 0")).toBe(0);
    expect(exitCodeOf("agent exited with code 127")).toBe(127);
    expect(exitCodeOf("agent exited with code -15")).toBe(-15);
    expect(exitCodeOf("session exited")).toBeUndefined();
  });
});
