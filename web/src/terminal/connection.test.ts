import { describe, expect, it } from "vitest";
import { AttachConnection, type ConnectionState, type SocketLike } from "./connection";

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
  drop(code: number) {
    this.readyState = 3;
    this.onclose?.({ code } as CloseEvent);
  }
}

function harness() {
  const sockets: FakeSocket[] = [];
  const timers: { fn: () => void; ms: number }[] = [];
  const states: [ConnectionState, number][] = [];
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
      onState: (state, detail) => states.push([state, detail.delayMs]),
    },
  });
  return { conn, sockets, timers, states, output };
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

  it("backs off 1, 2, 4, 8, 16, 30, 30 s while the server is away, and resets after success", () => {
    const h = harness();
    h.conn.start();
    for (let i = 0; i < 7; i += 1) {
      h.sockets[i]!.drop(1006);
      h.timers[i]!.fn();
    }
    expect(h.timers.map((t) => t.ms / 1000)).toEqual([1, 2, 4, 8, 16, 30, 30]);
    h.sockets[7]!.open();
    h.sockets[7]!.drop(1006);
    expect(h.timers[7]!.ms).toBe(1000);
    expect(h.states.filter(([s]) => s === "reconnecting").length).toBeGreaterThan(7);
  });

  it("stops on a normal close (the process ended) and sends only while open", () => {
    const h = harness();
    h.conn.start();
    expect(h.conn.send("early")).toBe(false);
    h.sockets[0]!.open();
    expect(h.conn.send("ls\r")).toBe(true);
    expect(h.sockets[0]!.sent).toEqual(["ls\r"]);
    h.sockets[0]!.drop(1000);
    expect(h.states.at(-1)?.[0]).toBe("ended");
    expect(h.timers).toHaveLength(0);
    h.conn.reconnectNow();
    expect(h.sockets).toHaveLength(2);
  });

  it("does nothing after dispose", () => {
    const h = harness();
    h.conn.start();
    h.conn.dispose();
    expect(h.sockets[0]!.onclose).toBeNull();
    expect(h.timers).toHaveLength(0);
  });
});
