import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import TerminalView from "./TerminalView";

class FakeWebSocket {
  static instances: FakeWebSocket[] = [];
  binaryType = "blob";
  readyState = 0;
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  sent: unknown[] = [];
  constructor(readonly url: string) {
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
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

describe("TerminalView", () => {
  it("attaches to the page host, posts its size on open and sends key-row input", async () => {
    const user = userEvent.setup();
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
    expect(screen.queryByRole("status")).toBeNull();
    expect(onResize).toHaveBeenCalledWith({ rows: expect.any(Number), cols: expect.any(Number) });

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
});
