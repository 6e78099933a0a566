import { act, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { FakeServer } from "../test/fakeServer";
import { item, renderWithApi } from "../test/render";
import { CONDITION_ORDER, POLL_MS, SessionPage } from "./SessionPage";

const PATH = "/api/v1/sandbox/sessions/box";

function cond(type: string, status: string, extra: Record<string, string> = {}) {
  return { type, status, ...extra };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("SessionPage provisioning", () => {
  it("shows the six-step waterfall and polls every 2 s until a final phase", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    const states = [
      item("box", { phase: "Provisioning", conditions: [cond("NamespaceReady", "True")] }),
      item("box", {
        phase: "Provisioning",
        conditions: [
          cond("NamespaceReady", "True"),
          cond("RBACReady", "True"),
          cond("PVCsReady", "False", { reason: "Cloning", message: "cloning acme/site" }),
        ],
      }),
      item("box", {
        phase: "Failed",
        status: "failed",
        conditions: [
          cond("NamespaceReady", "True"),
          cond("RBACReady", "True"),
          cond("PVCsReady", "False", { reason: "CloneFailed", message: "repository not found" }),
          cond("Ready", "False", { reason: "CloneFailed" }),
        ],
      }),
    ];
    let call = 0;
    const s = new FakeServer().on("GET", PATH, () => ({
      status: 200,
      body: states[Math.min(call++, states.length - 1)],
    }));
    renderWithApi(<SessionPage id="box" />, s);

    const ns = await screen.findByTestId("condition-NamespaceReady");
    expect(ns).toHaveAttribute("data-state", "done");
    expect(screen.getByTestId("condition-RBACReady")).toHaveAttribute("data-state", "active");
    for (const type of CONDITION_ORDER) expect(screen.getByTestId(`condition-${type}`)).toBeInTheDocument();
    expect(screen.getByTestId("condition-TokenReady")).toHaveAttribute("data-state", "waiting");

    await act(async () => {
      await vi.advanceTimersByTimeAsync(POLL_MS);
    });
    await waitFor(() =>
      expect(screen.getByTestId("condition-PVCsReady")).toHaveAttribute("data-state", "active"),
    );
    expect(screen.getByTestId("condition-PVCsReady")).toHaveTextContent("cloning acme/site");

    await act(async () => {
      await vi.advanceTimersByTimeAsync(POLL_MS);
    });
    const alert = await screen.findByRole("alert");
    expect(within(alert).getByText("Provisioning failed")).toBeInTheDocument();
    expect(alert).toHaveTextContent("CloneFailed — repository not found");
    expect(within(alert).getByRole("button", { name: "Delete + retry" })).toBeInTheDocument();

    // Failed is final: no more polling.
    const before = s.callsTo("GET", PATH).length;
    await act(async () => {
      await vi.advanceTimersByTimeAsync(POLL_MS * 3);
    });
    expect(s.callsTo("GET", PATH).length).toBe(before);
  });

  it("Delete + retry deletes, then creates the same name again (waiting out a 409)", async () => {
    const user = userEvent.setup();
    const failed = item("box", {
      name: "My Box",
      phase: "Failed",
      status: "failed",
      repo: "acme/site",
      conditions: [cond("NamespaceReady", "False", { reason: "OwnerOrgRefMissing" })],
    });
    let creates = 0;
    const s = new FakeServer()
      .on("GET", PATH, { status: 200, body: failed })
      .on("DELETE", PATH, { status: 204 })
      .on("POST", "/api/v1/sandbox/sessions", () => {
        creates += 1;
        return creates === 1
          ? { status: 409, body: { error: "sandbox-already-exists", detail: "still there" } }
          : { status: 201, body: item("box", { name: "My Box", phase: "Pending" }) };
      });
    renderWithApi(<SessionPage id="box" />, s);
    await user.click(await screen.findByRole("button", { name: "Delete + retry" }));
    await screen.findByText("Provisioning");
    await waitFor(() => expect(creates).toBe(2));
    expect(s.callsTo("DELETE", PATH)).toHaveLength(1);
    expect(s.callsTo("POST", "/api/v1/sandbox/sessions")[1]?.body).toEqual({
      agent: "aider",
      name: "My Box",
      repo: "acme/site",
    });
  });

  it("says the session no longer exists on 404", async () => {
    const s = new FakeServer().on("GET", PATH, {
      status: 404,
      body: { error: "sandbox-not-found", detail: 'sandbox "box" not found in namespace "acme"' },
    });
    renderWithApi(<SessionPage id="box" />, s);
    expect(await screen.findByRole("heading", { name: "Session no longer exists" })).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "Back to sessions" })).toHaveAttribute("href", "/sandbox");
  });

  it("keeps the waterfall while the server is briefly unreachable", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    let call = 0;
    const s = new FakeServer().on("GET", PATH, () =>
      call++ === 0
        ? { status: 200, body: item("box", { phase: "Pending" }) }
        : { status: 503, body: { error: "sandbox-backend-unavailable", detail: "sandbox backend temporarily unavailable" } },
    );
    renderWithApi(<SessionPage id="box" />, s);
    await screen.findByTestId("condition-NamespaceReady");
    await act(async () => {
      await vi.advanceTimersByTimeAsync(POLL_MS);
    });
    expect(await screen.findByText(/sandbox backend temporarily unavailable/)).toBeInTheDocument();
    expect(screen.getByTestId("condition-NamespaceReady")).toBeInTheDocument();
  });

  it("deletes after confirmation and goes back to the list", async () => {
    const user = userEvent.setup();
    window.history.replaceState(null, "", "/sandbox/box");
    const s = new FakeServer()
      .on("GET", PATH, { status: 200, body: item("box", { phase: "Provisioning" }) })
      .on("DELETE", PATH, { status: 204 });
    renderWithApi(<SessionPage id="box" />, s);
    await user.click(await screen.findByRole("button", { name: "Delete" }));
    const dialog = screen.getByRole("dialog", { name: "Delete this session?" });
    expect(s.callsTo("DELETE", PATH)).toHaveLength(0);
    await user.click(within(dialog).getByRole("button", { name: "Delete session" }));
    await waitFor(() => expect(window.location.pathname).toBe("/sandbox"));
    expect(s.callsTo("DELETE", PATH)).toHaveLength(1);
  });

  it("puts the ✕ on the step that failed: a cross-org repo fails the repositories, not the workspace", async () => {
    // the conditions as the embedded controller writes them for CrossOrgRepo
    const failed = item("box", {
      phase: "Failed",
      status: "failed",
      repo: "other/site",
      conditions: [
        cond("NamespaceReady", "Unknown", { reason: "NotAttempted", message: "not attempted: CrossOrgRepo" }),
        cond("RBACReady", "True", { reason: "LocalUser" }),
        cond("PVCsReady", "False", {
          reason: "CrossOrgRepo",
          message: "repo 'other/site' belongs to org 'other', not to the owner's org 'acme'",
        }),
        cond("PtyReady", "Unknown", { reason: "Waiting" }),
        cond("McpReady", "True", { reason: "NotApplicable" }),
        cond("TokenReady", "True", { reason: "NotApplicable" }),
        cond("Ready", "False", { reason: "CrossOrgRepo" }),
      ],
    });
    renderWithApi(<SessionPage id="box" />, new FakeServer().on("GET", PATH, { status: 200, body: failed }));
    await screen.findByRole("heading", { name: "Provisioning failed" });
    const state = (type: string) => screen.getByTestId(`condition-${type}`).getAttribute("data-state");
    expect(state("PVCsReady")).toBe("failed");
    expect(state("NamespaceReady")).toBe("skipped");
    expect(screen.getByTestId("condition-NamespaceReady")).toHaveTextContent("not attempted");
    expect(state("RBACReady")).toBe("done");
    expect(state("PtyReady")).toBe("skipped");
    expect(screen.getAllByTestId(/^condition-/).filter((el) => el.dataset.state === "failed")).toHaveLength(1);
  });

  it("marks the step a failure reason belongs to when only Ready carries it", async () => {
    const failed = item("box", {
      phase: "Failed",
      status: "failed",
      conditions: [
        cond("NamespaceReady", "True"),
        cond("RBACReady", "True"),
        cond("PVCsReady", "True"),
        cond("PtyReady", "Unknown", { reason: "Waiting" }),
        cond("Ready", "False", { reason: "AgentUnavailable", message: "qwen: binary not found" }),
      ],
    });
    renderWithApi(<SessionPage id="box" />, new FakeServer().on("GET", PATH, { status: 200, body: failed }));
    await screen.findByRole("heading", { name: "The agent cannot start" });
    expect(screen.getByTestId("condition-PtyReady")).toHaveAttribute("data-state", "failed");
    expect(screen.getByTestId("condition-PtyReady")).toHaveTextContent("qwen: binary not found");
  });

  it("does not attach to a failed sandbox (AgentUnavailable): it shows the message", async () => {
    const sockets: string[] = [];
    vi.stubGlobal(
      "WebSocket",
      class {
        constructor(url: string) {
          sockets.push(url);
        }
      },
    );
    try {
      const failed = item("box", {
        phase: "Failed",
        status: "failed",
        conditions: [
          cond("NamespaceReady", "True"),
          cond("PtyReady", "False", { reason: "AgentUnavailable", message: "opencode: exec format error" }),
          cond("Ready", "False", { reason: "AgentUnavailable", message: "opencode: exec format error" }),
        ],
      });
      const s = new FakeServer().on("GET", PATH, { status: 200, body: failed });
      renderWithApi(<SessionPage id="box" />, s);
      const alert = await screen.findByRole("alert");
      expect(within(alert).getByRole("heading", { name: "The agent cannot start" })).toBeInTheDocument();
      expect(alert).toHaveTextContent("AgentUnavailable — opencode: exec format error");
      expect(screen.getByTestId("condition-PtyReady")).toHaveAttribute("data-state", "failed");
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(sockets).toEqual([]);
      expect(screen.queryByTestId("sandbox-terminal")).toBeNull();
    } finally {
      vi.unstubAllGlobals();
    }
  });
});
