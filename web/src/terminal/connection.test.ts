import { describe, expect, it } from "vitest";
import {
  ACK_DELAY_MS,
  AttachConnection,
  PING_INTERVAL_MS,
  classifyClose,
  exitCodeOf,
  type ConnectionState,
  type OutputKind,
  type SocketLike,
  type StateDetail,
} from "./connection";
import { encodeBinaryFrame, type Control } from "./protocol";

class FakeSocket implements SocketLike {
  binaryType: BinaryType = "blob";
  readyState = 0;
  protocol = "";
  onopen: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  onclose: ((ev: CloseEvent) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  sent: unknown[] = [];
  constructor(
    readonly url: string,
    readonly offered: string[] = [],
  ) {}
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

function harness(url = "ws://h/attach") {
  const sockets: FakeSocket[] = [];
  const timers: { fn: () => void; ms: number; cleared?: boolean }[] = [];
  const states: [ConnectionState, number][] = [];
  const details: [ConnectionState, StateDetail][] = [];
  const output: [string, boolean][] = [];
  const kinds: [string, OutputKind][] = [];
  const writes: (() => void)[] = [];
  const controls: Control[] = [];
  const conn = new AttachConnection({
    url,
    createSocket: (url, protocols) => {
      const s = new FakeSocket(url, protocols);
      sockets.push(s);
      return s;
    },
    setTimer: (fn, ms) => {
      timers.push({ fn, ms });
      return timers.length - 1;
    },
    clearTimer: (h) => {
      const t = timers[h as number];
      if (t) t.cleared = true;
    },
    now: () => 1234,
    handlers: {
      onControl: (c) => controls.push(c),
      onOutput: (data, kind, written) => {
        const text = typeof data === "string" ? data : new TextDecoder().decode(data);
        output.push([text, kind !== "live"]);
        kinds.push([text, kind]);
        writes.push(written);
      },
      onState: (state, detail) => {
        states.push([state, detail.delayMs]);
        details.push([state, detail]);
      },
    },
  });
  return { conn, sockets, timers, states, details, output, kinds, writes, controls };
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

/** A v2 server: accepts the subprotocol, says hello, announces and sends frames. */
function v2(socket: FakeSocket, hello: Record<string, unknown> = {}) {
  socket.protocol = "sandbox.v2";
  socket.open();
  socket.receive(
    JSON.stringify({
      type: "hello",
      protocol: "sandbox.v2",
      viewer: "v",
      mode: "write",
      rows: 24,
      cols: 80,
      window: 1 << 20,
      activity: "busy",
      title: "",
      ...hello,
    }),
  );
}
const frame = (start: number, s: string) =>
  encodeBinaryFrame(start, new TextEncoder().encode(s)).buffer as ArrayBuffer;
const snapshot = (socket: FakeSocket, seq: number, screen: string, reason = "attach") => {
  socket.receive(JSON.stringify({ type: "snapshot", seq, reason }));
  socket.receive(frame(seq, screen));
};
const sentText = (socket: FakeSocket) =>
  socket.sent.filter((m): m is string => typeof m === "string").map((m) => JSON.parse(m));

describe("AttachConnection over sandbox.v2", () => {
  it("offers sandbox.v2 and reconnects with ?since= the offset it had received", () => {
    const h = harness("ws://h/attach?share=tok");
    h.conn.start();
    expect(h.sockets[0]!.offered).toEqual(["sandbox.v2"]);
    expect(h.sockets[0]!.url).toBe("ws://h/attach?share=tok");
    v2(h.sockets[0]!);
    snapshot(h.sockets[0]!, 100, "$ ");
    h.sockets[0]!.receive(frame(100, "ls\r\n"));
    h.sockets[0]!.receive(frame(104, "a b\r\n"));
    expect(h.conn.streamOffset).toBe(109);
    h.sockets[0]!.drop(1006);
    h.timers.find((t) => t.ms === 1000)!.fn();
    expect(h.sockets[1]!.url).toBe("ws://h/attach?share=tok&since=109");
    // the server still held the bytes: a resume, written as it is (no reset)
    v2(h.sockets[1]!);
    h.sockets[1]!.receive(JSON.stringify({ type: "resume", seq: 109 }));
    expect(h.states.at(-1)?.[0]).toBe("open");
    h.sockets[1]!.receive(frame(109, "$ "));
    h.sockets[1]!.receive(frame(111, "x"));
    expect(h.kinds).toEqual([
      ["$ ", "snapshot"],
      ["ls\r\n", "live"],
      ["a b\r\n", "live"],
      ["$ ", "resume"],
      ["x", "live"],
    ]);
    expect(h.conn.streamOffset).toBe(112);
    // a third connection that is answered with a snapshot (the bytes were gone)
    h.sockets[1]!.drop(1012);
    h.timers.filter((t) => t.ms === 1000).at(-1)!.fn();
    expect(h.sockets[2]!.url).toBe("ws://h/attach?share=tok&since=112");
    v2(h.sockets[2]!);
    snapshot(h.sockets[2]!, 5000, "screen", "gap");
    expect(h.kinds.at(-1)).toEqual(["screen", "snapshot"]);
    expect(h.conn.streamOffset).toBe(5000);
  });

  it("writes only the new part of a frame that overlaps what it has, and none of a duplicate", () => {
    const h = harness();
    h.conn.start();
    v2(h.sockets[0]!);
    snapshot(h.sockets[0]!, 10, "S");
    h.sockets[0]!.receive(frame(10, "abcd"));
    h.sockets[0]!.receive(frame(12, "cdef"));
    h.sockets[0]!.receive(frame(11, "bc"));
    expect(h.kinds.map(([t]) => t)).toEqual(["S", "abcd", "ef"]);
    expect(h.conn.streamOffset).toBe(16);
  });

  it("starts a restarted agent from a snapshot, not from the old stream's offset", () => {
    const h = harness();
    h.conn.start();
    v2(h.sockets[0]!);
    snapshot(h.sockets[0]!, 50, "$ ");
    h.sockets[0]!.receive(JSON.stringify({ type: "exit", code: 4 }));
    h.sockets[0]!.drop(1000, "");
    expect(h.details.at(-1)).toEqual(["ended", expect.objectContaining({ exitCode: 4 })]);
    h.conn.reconnectNow();
    expect(h.sockets[1]!.url).toBe("ws://h/attach");
  });

  it("acknowledges what the terminal has written, coalesced, never what it has not", () => {
    const h = harness();
    h.conn.start();
    v2(h.sockets[0]!, { window: 4096 });
    snapshot(h.sockets[0]!, 100, "screen");
    h.sockets[0]!.receive(frame(100, "0123456789"));
    expect(sentText(h.sockets[0]!).filter((m) => m.type === "ack")).toEqual([]);
    h.writes[0]!(); // the snapshot is on screen
    const ackTimer = h.timers.find((t) => t.ms === ACK_DELAY_MS)!;
    expect(sentText(h.sockets[0]!).filter((m) => m.type === "ack")).toEqual([]);
    h.writes[1]!();
    ackTimer.fn();
    // one ack for both writes: the end of the last one written
    expect(sentText(h.sockets[0]!).filter((m) => m.type === "ack")).toEqual([
      { type: "ack", seq: 110 },
    ]);
    // a quarter of the window unacknowledged goes at once, without waiting
    h.sockets[0]!.receive(frame(110, "x".repeat(1024)));
    h.writes[2]!();
    expect(sentText(h.sockets[0]!).filter((m) => m.type === "ack").at(-1)).toEqual({
      type: "ack",
      seq: 1134,
    });
    // a write finishing after its socket was replaced acknowledges nothing on the new one
    h.sockets[0]!.receive(frame(1134, "late"));
    h.sockets[0]!.drop(1006);
    h.timers.find((t) => t.ms === 1000)!.fn();
    v2(h.sockets[1]!);
    h.writes[3]!();
    expect(h.sockets[1]!.sent).toEqual([]);
  });

  it("pings every 20 s while attached and stops when the socket goes", () => {
    const h = harness();
    h.conn.start();
    v2(h.sockets[0]!);
    snapshot(h.sockets[0]!, 0, "");
    const ping = () => h.timers.filter((t) => t.ms === PING_INTERVAL_MS && !t.cleared);
    const fire = (t: { fn: () => void; cleared?: boolean }) => {
      t.cleared = true; // a fired timer is spent
      t.fn();
    };
    expect(ping()).toHaveLength(1);
    fire(ping()[0]!);
    expect(ping()).toHaveLength(1);
    fire(ping()[0]!);
    expect(sentText(h.sockets[0]!).filter((m) => m.type === "ping")).toEqual([
      { type: "ping", t: 1234 },
      { type: "ping", t: 1234 },
    ]);
    h.sockets[0]!.drop(1006);
    expect(ping()).toHaveLength(0);
  });

  it("sends input as binary and size as a control, and neither when read-only", () => {
    const h = harness();
    h.conn.start();
    v2(h.sockets[0]!);
    snapshot(h.sockets[0]!, 0, "$ ");
    expect(h.conn.send("ls\r")).toBe(true);
    expect(h.conn.sendResize(30, 100)).toBe(true);
    expect(new TextDecoder().decode(h.sockets[0]!.sent[0] as Uint8Array)).toBe("ls\r");
    expect(JSON.parse(h.sockets[0]!.sent[1] as string)).toEqual({
      type: "resize",
      rows: 30,
      cols: 100,
    });
    expect(h.controls.map((c) => c.type)).toEqual(["hello"]);

    const r = harness();
    r.conn.start();
    v2(r.sockets[0]!, { mode: "read" });
    snapshot(r.sockets[0]!, 0, "$ ");
    expect(r.conn.readOnly).toBe(true);
    expect(r.conn.send("rm -rf /\r")).toBe(false);
    expect(r.conn.sendResize(30, 100)).toBe(false);
    expect(r.sockets[0]!.sent).toEqual([]);
  });

  it("falls back to raw when the server answers without the subprotocol", () => {
    const h = harness();
    h.conn.start();
    h.sockets[0]!.open(); // protocol "": an older server
    h.sockets[0]!.receive(bytes("$ ls\r\n"));
    h.sockets[0]!.receive(bytes("a\r\n"));
    expect(h.kinds).toEqual([
      ["$ ls\r\n", "snapshot"],
      ["a\r\n", "live"],
    ]);
    expect(h.conn.isV2).toBe(false);
    expect(h.conn.sendResize(1, 1)).toBe(false);
    h.conn.send("x");
    expect(h.sockets[0]!.sent).toEqual(["x"]);
    h.sockets[0]!.drop(1006);
    h.timers[0]!.fn();
    expect(h.sockets[1]!.url).toBe("ws://h/attach");
  });

  it.each(["share-revoked", "share-expired"])("does not retry a %s close", (reason) => {
    const h = harness();
    h.conn.start();
    v2(h.sockets[0]!, { mode: "read" });
    snapshot(h.sockets[0]!, 0, "$ ");
    h.sockets[0]!.drop(1008, reason);
    expect(h.details.at(-1)).toEqual(["refused", expect.objectContaining({ reason })]);
    expect(h.timers.filter((t) => t.ms >= 1000 && t.ms < PING_INTERVAL_MS)).toHaveLength(0);
    expect(h.sockets).toHaveLength(1);
  });
});
