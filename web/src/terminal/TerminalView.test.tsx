import { act, render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import TerminalView from "./TerminalView";
import { encodeBinaryFrame } from "./protocol";

class FakeWebSocket {
  static instances: FakeWebSocket[] = [];
  binaryType = "blob";
  readyState = 0;
  protocol = "";
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  sent: unknown[] = [];
  constructor(
    readonly url: string,
    readonly protocols?: string[],
  ) {
    FakeWebSocket.instances.push(this);
  }
  send(data: unknown) {
    this.sent.push(data);
  }
  close() {
    this.readyState = 3;
  }
}

beforeEach(() => {
  FakeWebSocket.instances = [];
  vi.stubGlobal("WebSocket", FakeWebSocket);
  vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockReturnValue(null);
  // jsdom has no media queries; xterm asks for the device pixel ratio through one.
  vi.stubGlobal("matchMedia", (query: string) => ({
    matches: false,
    media: query,
    addEventListener: () => undefined,
    removeEventListener: () => undefined,
    addListener: () => undefined,
    removeListener: () => undefined,
  }));
});
afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

describe("TerminalView", () => {
  it("attaches to the page host, posts its size once attached and sends key-row input", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    const user = userEvent.setup({ advanceTimers: vi.advanceTimersByTime });
    const onResize = vi.fn(async () => undefined);
    render(
      <TerminalView
        label="aider"
        attachUrl="/api/v1/sandbox/sessions/box/attach"
        active
        prefs={{ fontSize: 14, webgl: false }}
        onPrefs={() => undefined}
        onResize={onResize}
      />,
    );
    const ws = FakeWebSocket.instances[0]!;
    expect(ws.url).toBe(`ws://${window.location.host}/api/v1/sandbox/sessions/box/attach`);
    expect(screen.getByRole("status")).toHaveTextContent("Connecting…");
    act(() => {
      ws.readyState = 1;
      ws.onopen?.(new Event("open"));
    });
    // the socket is open but the server has not attached it yet: no resize (it would 404)
    expect(onResize).not.toHaveBeenCalled();
    expect(screen.getByRole("status")).toHaveTextContent("Connecting…");
    act(() => replay(ws));
    expect(screen.queryByRole("status")).toBeNull();
    const pane = document.querySelector(".terminal-pane")!;
    expect(pane).toHaveAttribute("data-sized", "false");
    await act(async () => {
      await vi.advanceTimersByTimeAsync(200);
    });
    expect(onResize).toHaveBeenCalledWith({ rows: expect.any(Number), cols: expect.any(Number) });
    expect(pane).toHaveAttribute("data-sized", "true");

    await user.click(screen.getByRole("button", { name: "Escape" }));
    await user.click(screen.getByRole("button", { name: "Arrow up" }));
    await user.click(screen.getByRole("button", { name: /^Control/ }));
    expect(screen.getByRole("button", { name: /^Control/ })).toHaveAttribute("aria-pressed", "true");
    expect(ws.sent).toEqual(["\x1b", "\x1b[A"]);
    // the sticky Ctrl turns the next typed key into its control character, then releases
    const input = document.querySelector<HTMLTextAreaElement>(".xterm-helper-textarea")!;
    await user.type(input, "c");
    expect(ws.sent.at(-1)).toBe("\x03");
    expect(screen.getByRole("button", { name: /^Control/ })).toHaveAttribute("aria-pressed", "false");
    await user.type(input, "l");
    expect(ws.sent.at(-1)).toBe("l");

    act(() => {
      ws.readyState = 3;
      ws.onclose?.({ code: 1006 } as CloseEvent);
    });
    expect(screen.getByRole("status")).toHaveTextContent(/reconnecting… \(retry in 1 s\)/);
  });

  it("posts no resize to a terminal that never attaches, however often it retries", () => {
    vi.useFakeTimers();
    try {
      const onResize = vi.fn(async () => undefined);
      view({ onResize });
      for (let i = 0; i < 3; i += 1) {
        const ws = FakeWebSocket.instances[i]!;
        act(() => {
          ws.readyState = 1;
          ws.onopen?.(new Event("open"));
          ws.readyState = 3;
          ws.onclose?.({ code: 1013, reason: "sandbox not ready yet" } as CloseEvent);
        });
        act(() => {
          vi.advanceTimersByTime(60_000);
        });
      }
      expect(FakeWebSocket.instances.length).toBeGreaterThanOrEqual(3);
      expect(onResize).not.toHaveBeenCalled();
    } finally {
      vi.useRealTimers();
    }
  });

  it("posts no resize when the server writes why it refuses and closes (1011)", () => {
    vi.useFakeTimers();
    const onResize = vi.fn(async () => undefined);
    view({ onResize, primary: true });
    const ws = FakeWebSocket.instances[0]!;
    act(() => {
      replay(ws); // the server's "cannot start the agent: …" line arrives as a frame
      close(ws, 1011, "cannot start the agent: binary not found");
    });
    act(() => {
      vi.advanceTimersByTime(60_000);
    });
    expect(onResize).not.toHaveBeenCalled();
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(screen.getByRole("status")).toHaveTextContent("Refused: cannot start the agent");
  });

  it("shows the agent's exit code at once and offers Restart agent, which attaches again", async () => {
    const user = userEvent.setup();
    const states: string[] = [];
    view({ primary: true, onConnectionState: (s: string) => states.push(s) });
    const ws = FakeWebSocket.instances[0]!;
    act(() => replay(ws));
    act(() => close(ws, 1000, "agent exited with code 3"));
    const status = screen.getByRole("status");
    expect(status).toHaveTextContent("aider exited with code 3");
    expect(screen.queryByRole("button", { name: "Reconnect now" })).toBeNull();
    expect(states.at(-1)).toBe("ended");
    expect(FakeWebSocket.instances).toHaveLength(1);
    await user.click(screen.getByRole("button", { name: "Restart agent" }));
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(screen.getByRole("status")).toHaveTextContent("Connecting…");
  });

  it("says why a terminal was refused and does not retry by itself", () => {
    vi.useFakeTimers();
    try {
      view({ primary: true });
      const ws = FakeWebSocket.instances[0]!;
      act(() => {
        ws.readyState = 1;
        ws.onopen?.(new Event("open"));
      });
      act(() => close(ws, 1011, "agent cannot start: qwen is not installed"));
      expect(screen.getByRole("status")).toHaveTextContent(
        "Refused: agent cannot start: qwen is not installed",
      );
      act(() => {
        vi.advanceTimersByTime(120_000);
      });
      expect(FakeWebSocket.instances).toHaveLength(1);
      expect(screen.getByRole("button", { name: "Try again" })).toBeInTheDocument();
      expect(screen.queryByRole("button", { name: "Restart agent" })).toBeNull();
    } finally {
      vi.useRealTimers();
    }
  });

  it("does not answer the terminal queries in a replay, only those asked live", async () => {
    view({ primary: true });
    const ws = FakeWebSocket.instances[0]!;
    const frame = (text: string) =>
      ({ data: new TextEncoder().encode(text).buffer }) as MessageEvent;
    act(() => {
      ws.readyState = 1;
      ws.onopen?.(new Event("open"));
      // what an agent asked at its start, long ago: device attributes and background
      ws.onmessage?.(frame("\x1b[c\x1b]11;?\x07\x1b[6n$ "));
    });
    // a live question after the replay is answered (the program is waiting for it)
    act(() => {
      ws.onmessage?.(frame("\x1b[c"));
    });
    await waitFor(() => expect(ws.sent.length).toBeGreaterThan(0));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(ws.sent).toEqual([expect.stringMatching(/^\x1b\[\?[\d;]+c$/)]);
  });

  it("offers Close tab, not Restart agent, when an extra terminal's shell exits", async () => {
    const user = userEvent.setup();
    const onCloseTab = vi.fn();
    view({ label: "Rescue shell", onCloseTab });
    const ws = FakeWebSocket.instances[0]!;
    act(() => replay(ws));
    act(() => close(ws, 1000, "agent exited with code 0"));
    expect(screen.getByRole("status")).toHaveTextContent("Rescue shell exited with code 0");
    expect(screen.queryByRole("button", { name: "Restart agent" })).toBeNull();
    await user.click(screen.getByRole("button", { name: "Close tab" }));
    expect(onCloseTab).toHaveBeenCalledOnce();
  });
});

describe("TerminalView over sandbox.v2", () => {
  it("does not answer the queries in a resume, only those asked live", async () => {
    view({ primary: true });
    const ws = FakeWebSocket.instances[0]!;
    expect(ws.protocols).toEqual(["sandbox.v2"]);
    act(() => {
      v2Hello(ws);
      v2Frame(ws, 0, "$ ", { type: "snapshot", seq: 0, reason: "attach" });
    });
    act(() => v2Frame(ws, 2, "\x1b[c\x1b]11;?\x07\x1b[6n", { type: "resume", seq: 2 }));
    // a live question after the replays is answered (the program is waiting for it)
    act(() => v2Frame(ws, 17, "\x1b[c"));
    await waitFor(() => expect(input(ws).length).toBeGreaterThan(0));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(input(ws)).toEqual([expect.stringMatching(/^\x1b\[\?[\d;]+c$/)]);
  });

  it("keeps what is typed while a v2 snapshot (screen state, never a query) is written", async () => {
    view({ primary: true });
    const ws = FakeWebSocket.instances[0]!;
    act(() => {
      v2Hello(ws);
      v2Frame(ws, 0, "$ ", { type: "snapshot", seq: 0, reason: "attach" });
    });
    await waitFor(() => expect(controls(ws).some((c) => c.type === "ack")).toBe(true));
    // a resize re-sends the screen; a key typed before xterm.js has parsed it still counts
    const textarea = document.querySelector<HTMLTextAreaElement>(".xterm-helper-textarea")!;
    act(() => {
      v2Frame(ws, 2, "$ ", { type: "snapshot", seq: 2, reason: "resize" });
      textarea.dispatchEvent(new InputEvent("input", { data: "x", inputType: "insertText" }));
    });
    await waitFor(() => expect(input(ws)).toContain("x"));
  });

  it("resizes with a control frame and is sized once the server reports the PTY's size", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    const onResize = vi.fn(async () => undefined);
    view({ onResize });
    const ws = FakeWebSocket.instances[0]!;
    act(() => {
      v2Hello(ws, { rows: 1, cols: 1 });
      v2Frame(ws, 0, "$ ", { type: "snapshot", seq: 0, reason: "attach" });
    });
    await act(async () => {
      await vi.advanceTimersByTimeAsync(200);
    });
    expect(onResize).not.toHaveBeenCalled();
    const resize = controls(ws).find((c) => c.type === "resize") as unknown as {
      rows: number;
      cols: number;
    };
    expect(resize).toEqual({ type: "resize", rows: expect.any(Number), cols: expect.any(Number) });
    const pane = document.querySelector(".terminal-pane")!;
    expect(pane).toHaveAttribute("data-sized", "false");
    act(() => ws.onmessage?.({ data: JSON.stringify({ type: "size", rows: resize.rows, cols: resize.cols }) } as MessageEvent));
    expect(pane).toHaveAttribute("data-sized", "true");
  });

  it("sends nothing typed and no size from a read-only (spectator) viewer", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    const user = userEvent.setup({ advanceTimers: vi.advanceTimersByTime });
    const onResize = vi.fn(async () => undefined);
    view({ onResize });
    const ws = FakeWebSocket.instances[0]!;
    act(() => {
      v2Hello(ws, { mode: "read", rows: 7, cols: 33 });
      v2Frame(ws, 0, "$ ", { type: "snapshot", seq: 0, reason: "attach" });
    });
    await act(async () => {
      await vi.advanceTimersByTimeAsync(200);
    });
    const textarea = document.querySelector<HTMLTextAreaElement>(".xterm-helper-textarea")!;
    await user.type(textarea, "ls{Enter}");
    act(() => v2Frame(ws, 2, "\x1b[c")); // not even answers to live queries
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(input(ws)).toEqual([]);
    expect(controls(ws).filter((c) => c.type === "resize")).toEqual([]);
    expect(onResize).not.toHaveBeenCalled();
    expect(document.querySelector(".terminal-pane")).toHaveAttribute("data-readonly", "true");
    // the spectator's screen has the PTY's size, not the frame's
    expect(document.querySelector(".xterm-rows")!.children).toHaveLength(7);
  });

  it("says a revoked share link is revoked and offers no retry", () => {
    view({ readOnly: true });
    const ws = FakeWebSocket.instances[0]!;
    act(() => {
      v2Hello(ws, { mode: "read" });
      v2Frame(ws, 0, "$ ", { type: "snapshot", seq: 0, reason: "attach" });
    });
    act(() => close(ws, 1008, "share-revoked"));
    expect(screen.getByRole("status")).toHaveTextContent("This share link was revoked");
    expect(screen.queryByRole("button", { name: "Try again" })).toBeNull();
    expect(FakeWebSocket.instances).toHaveLength(1);
  });
});

function v2Hello(ws: FakeWebSocket, hello: Record<string, unknown> = {}) {
  ws.protocol = "sandbox.v2";
  ws.readyState = 1;
  ws.onopen?.(new Event("open"));
  const body = { type: "hello", protocol: "sandbox.v2", viewer: "v", mode: "write", rows: 24, cols: 80, window: 1 << 20, activity: "busy", title: "" };
  ws.onmessage?.({ data: JSON.stringify({ ...body, ...hello }) } as MessageEvent);
}

function v2Frame(ws: FakeWebSocket, start: number, text: string, announce?: object) {
  if (announce) ws.onmessage?.({ data: JSON.stringify(announce) } as MessageEvent);
  const data = encodeBinaryFrame(start, new TextEncoder().encode(text)).buffer;
  ws.onmessage?.({ data } as MessageEvent);
}

/** What the viewer typed (binary frames), as text. */
function input(ws: FakeWebSocket): string[] {
  // (TextEncoder's arrays come from another realm than jsdom's Uint8Array: no instanceof)
  return ws.sent
    .filter((m) => typeof m !== "string")
    .map((m) => new TextDecoder().decode(m as Uint8Array));
}

function controls(ws: FakeWebSocket): { type: string }[] {
  return ws.sent.filter((m): m is string => typeof m === "string").map((m) => JSON.parse(m) as { type: string });
}

function view(props: Record<string, unknown> = {}) {
  return render(
    <TerminalView
      label="aider"
      attachUrl="/api/v1/sandbox/sessions/box/attach"
      active
      prefs={{ fontSize: 14, webgl: false }}
      onPrefs={() => undefined}
      onResize={async () => undefined}
      {...props}
    />,
  );
}

function replay(ws: FakeWebSocket) {
  ws.readyState = 1;
  ws.onopen?.(new Event("open"));
  ws.onmessage?.({ data: new TextEncoder().encode("$ ").buffer } as MessageEvent);
}

function close(ws: FakeWebSocket, code: number, reason: string) {
  ws.readyState = 3;
  ws.onclose?.({ code, reason } as CloseEvent);
}
