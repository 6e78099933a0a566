import { act, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useEffect } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { FakeServer } from "../test/fakeServer";
import { item, renderWithApi } from "../test/render";
import { POLL_MS, SessionPage } from "./SessionPage";

// The terminal itself is tested on its own: a stand-in that names its socket and can
// report a connection state the test chooses.
const report: { state: string | null; reason?: string } = { state: null };
vi.mock("../terminal/TerminalView", () => ({
  default: function StandIn({
    label,
    attachUrl,
    onConnectionState,
  }: {
    label: string;
    attachUrl: string;
    onConnectionState?: (state: string, detail: object) => void;
  }) {
    useEffect(() => {
      if (report.state) onConnectionState?.(report.state, { attempt: 0, delayMs: 0, reason: report.reason });
    }, [onConnectionState]);
    return <div data-testid="terminal-stand-in" data-label={label} data-url={attachUrl} />;
  },
}));

const PATH = "/api/v1/sandbox/sessions/box";
const TERMINALS = `${PATH}/terminals`;
const RUNNING = item("box", { phase: "Ready", status: "running" });

afterEach(() => {
  report.state = null;
  report.reason = undefined;
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

function terminal(id: string, agent = "sovereign-shell") {
  return { id, agent, attachUrl: `${PATH}/terminals/${id}/attach` };
}

function live(listed: unknown[]) {
  return new FakeServer()
    .on("GET", PATH, { status: 200, body: RUNNING })
    .on("GET", TERMINALS, { status: 200, body: { terminals: listed } });
}

function tabNames() {
  return screen.getAllByRole("tab").map((t) => t.textContent);
}

describe("SessionPage terminals", () => {
  it("rebuilds the extra terminals' tabs from the server after a reload", async () => {
    const s = live([
      { id: "box", agent: "aider", attachUrl: `${PATH}/attach` },
      terminal("t1"),
      terminal("t2"),
    ]);
    renderWithApi(<SessionPage id="box" />, s);
    await waitFor(() => expect(screen.getAllByRole("tab")).toHaveLength(3));
    expect(tabNames()).toEqual(["aider", "Rescue shell", "Rescue shell 2"]);
    const urls = screen.getAllByTestId("terminal-stand-in").map((t) => t.getAttribute("data-url"));
    expect(urls).toEqual([`${PATH}/attach`, `${PATH}/terminals/t1/attach`, `${PATH}/terminals/t2/attach`]);
    // the primary cannot be closed; the others can
    expect(screen.queryByRole("button", { name: "Close aider" })).toBeNull();
    expect(screen.getByRole("button", { name: "Close Rescue shell" })).toBeInTheDocument();
  });

  it("closes a tab with DELETE and goes back to the primary", async () => {
    const user = userEvent.setup();
    const s = live([terminal("t1")]).on("DELETE", `${TERMINALS}/t1`, { status: 204 });
    renderWithApi(<SessionPage id="box" />, s);
    const tab = await screen.findByRole("tab", { name: "Rescue shell" });
    await user.click(tab);
    expect(tab).toHaveAttribute("aria-selected", "true");
    await user.click(screen.getByRole("button", { name: "Close Rescue shell" }));
    await waitFor(() => expect(screen.queryByRole("tab")).toBeNull());
    expect(s.callsTo("DELETE", `${TERMINALS}/t1`)).toHaveLength(1);
    expect(screen.getAllByTestId("terminal-stand-in")).toHaveLength(1);
  });

  it("shows the session-limit detail when the server refuses another terminal (429)", async () => {
    const user = userEvent.setup();
    const s = live([]).on("POST", TERMINALS, {
      status: 429,
      body: {
        error: "session-limit",
        detail: "at most 2 extra terminals per sandbox (quota.concurrentSessions - 1)",
      },
    });
    renderWithApi(<SessionPage id="box" />, s);
    await user.click(await screen.findByRole("button", { name: "Rescue shell" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(
      "Could not open the rescue shell: at most 2 extra terminals per sandbox (quota.concurrentSessions - 1)",
    );
    expect(screen.queryByRole("tab")).toBeNull();
  });

  it("numbers a new rescue shell after the ones already open", async () => {
    const user = userEvent.setup();
    const s = live([terminal("t1")]).on("POST", TERMINALS, {
      status: 201,
      body: terminal("t9"),
    });
    renderWithApi(<SessionPage id="box" />, s);
    await screen.findByRole("tab", { name: "Rescue shell" });
    await user.click(screen.getByRole("button", { name: "Rescue shell" }));
    expect(await screen.findByRole("tab", { name: "Rescue shell 2" })).toHaveAttribute(
      "aria-selected",
      "true",
    );
    expect(s.callsTo("POST", TERMINALS)[0]?.body).toEqual({ agent: "sovereign-shell" });
  });

  it("keeps polling while the primary is refused, and shows the failure once recorded", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    report.state = "refused";
    let gets = 0;
    const s = new FakeServer()
      .on("GET", PATH, () => {
        gets += 1;
        return gets < 4
          ? { status: 200, body: RUNNING }
          : {
              status: 200,
              body: item("box", {
                phase: "Failed",
                status: "failed",
                conditions: [
                  { type: "NamespaceReady", status: "True" },
                  { type: "PtyReady", status: "False", reason: "AgentUnavailable", message: "qwen: not found" },
                  { type: "Ready", status: "False", reason: "AgentUnavailable", message: "qwen: not found" },
                ],
              }),
            };
      })
      .on("GET", TERMINALS, { status: 200, body: { terminals: [] } });
    renderWithApi(<SessionPage id="box" />, s);
    await screen.findByTestId("terminal-stand-in");
    for (let i = 0; i < 3 && !screen.queryByRole("heading", { name: "The agent cannot start" }); i += 1) {
      await act(async () => {
        await vi.advanceTimersByTimeAsync(POLL_MS);
      });
    }
    expect(await screen.findByRole("heading", { name: "The agent cannot start" })).toBeInTheDocument();
    expect(screen.getByRole("alert")).toHaveTextContent("AgentUnavailable — qwen: not found");
    expect(screen.queryByTestId("terminal-stand-in")).toBeNull();
  });
});

describe("A sandbox whose agent could not start", () => {
  const UNAVAILABLE = item("box", {
    phase: "Failed",
    status: "failed",
    conditions: [
      { type: "NamespaceReady", status: "True" },
      { type: "PtyReady", status: "False", reason: "AgentUnavailable", message: "qwen: not found" },
      { type: "Ready", status: "False", reason: "AgentUnavailable", message: "qwen: not found" },
    ],
  });

  it("does not attach, keeps watching, and opens the terminal once the agent can start", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    let gets = 0;
    const s = new FakeServer()
      .on("GET", PATH, () => {
        gets += 1;
        return { status: 200, body: gets < 3 ? UNAVAILABLE : RUNNING };
      })
      .on("GET", TERMINALS, { status: 200, body: { terminals: [] } });
    renderWithApi(<SessionPage id="box" />, s);
    expect(await screen.findByRole("heading", { name: "The agent cannot start" })).toBeInTheDocument();
    expect(screen.queryByTestId("terminal-stand-in")).toBeNull();
    for (let i = 0; i < 3 && !screen.queryByTestId("terminal-stand-in"); i += 1) {
      await act(async () => {
        await vi.advanceTimersByTimeAsync(POLL_MS);
      });
    }
    expect(await screen.findByTestId("terminal-stand-in")).toBeInTheDocument();
  });

  it("Start the agent again attaches; a second refusal is shown with its reason", async () => {
    const user = userEvent.setup();
    const s = new FakeServer()
      .on("GET", PATH, { status: 200, body: UNAVAILABLE })
      .on("GET", TERMINALS, { status: 200, body: { terminals: [] } });
    renderWithApi(<SessionPage id="box" />, s);
    await screen.findByRole("heading", { name: "The agent cannot start" });
    report.state = "refused";
    report.reason = "agent cannot start: qwen: not found";
    await user.click(screen.getByRole("button", { name: "Start the agent again" }));
    expect(await screen.findByText("Tried again: agent cannot start: qwen: not found")).toBeInTheDocument();
    expect(screen.getByRole("heading", { name: "The agent cannot start" })).toBeInTheDocument();
    expect(screen.queryByTestId("terminal-stand-in")).toBeNull();
  });

  it("keeps the terminal of an agent started again while the server still says failed", async () => {
    const user = userEvent.setup();
    const s = new FakeServer()
      .on("GET", PATH, { status: 200, body: UNAVAILABLE })
      .on("GET", TERMINALS, { status: 200, body: { terminals: [] } });
    renderWithApi(<SessionPage id="box" />, s);
    await screen.findByRole("heading", { name: "The agent cannot start" });
    report.state = "open";
    await user.click(screen.getByRole("button", { name: "Start the agent again" }));
    expect(await screen.findByTestId("terminal-stand-in")).toBeInTheDocument();
    expect(screen.queryByRole("heading", { name: "The agent cannot start" })).toBeNull();
  });
});

describe("Open on another device", () => {
  const SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 21 21"><script>alert(1)</script><rect width="7" height="7"/></svg>';

  it("makes a one-time link for this session and shows its QR code safely, the link and the expiry", async () => {
    const user = userEvent.setup();
    const writeText = vi.fn(async () => undefined);
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    const expiresAt = new Date(Date.now() + 10 * 60_000).toISOString();
    const url = "http://127.0.0.1:8080/login?token=one-time";
    const s = live([]).on("POST", "/api/v1/sandbox/login-links", {
      status: 201,
      body: { url, expiresAt, qrSvg: SVG },
    });
    renderWithApi(<SessionPage id="box" />, s);
    await user.click(await screen.findByRole("button", { name: "Open on another device" }));
    const dialog = screen.getByRole("dialog", { name: "Open on another device" });
    const img = await within(dialog).findByRole("img", { name: "QR code of the sign-in link" });
    expect(s.callsTo("POST", "/api/v1/sandbox/login-links")[0]?.body).toEqual({ next: "/sandbox/box" });
    // an image with a data: URL, never markup in the page
    expect(img.getAttribute("src")).toBe(`data:image/svg+xml;charset=utf-8,${encodeURIComponent(SVG)}`);
    expect(dialog.querySelector("svg, script")).toBeNull();
    expect(within(dialog).getByLabelText("Sign-in link")).toHaveValue(url);
    expect(dialog).toHaveTextContent(/Expires at .+ \(in 10 min\); single use\./);
    await user.click(within(dialog).getByRole("button", { name: "Copy" }));
    expect(writeText).toHaveBeenCalledWith(url);
    expect(await within(dialog).findByText("Copied.")).toBeInTheDocument();
    await user.click(within(dialog).getByRole("button", { name: "Done" }));
    expect(screen.queryByRole("dialog")).toBeNull();
  });

  it("says why when the server cannot make links (409)", async () => {
    const user = userEvent.setup();
    const s = live([]).on("POST", "/api/v1/sandbox/login-links", {
      status: 409,
      body: { error: "login-links-unavailable", detail: "tokens come from an external issuer" },
    });
    renderWithApi(<SessionPage id="box" />, s);
    await user.click(await screen.findByRole("button", { name: "Open on another device" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(
      "Could not make a link: tokens come from an external issuer",
    );
    expect(screen.queryByRole("img")).toBeNull();
  });
});
