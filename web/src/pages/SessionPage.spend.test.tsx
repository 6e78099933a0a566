import { act, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { WhoAmI } from "../api/client";
import { SPEND_POLL_MS } from "../components/SessionSpend";
import { FakeServer } from "../test/fakeServer";
import { budget, item, renderWithApi } from "../test/render";
import { SessionPage } from "./SessionPage";

vi.mock("../terminal/TerminalView", () => ({
  default: function StandIn() {
    return <div data-testid="terminal-stand-in" />;
  },
}));

const PATH = "/api/v1/sandbox/sessions/box";
const BUDGETS = "/api/v1/sandbox/budgets";
const DEV: WhoAmI = { sub: "u-dev", email: "Dev@Acme.com", org: "acme", orgAdmin: false };
const ADMIN: WhoAmI = { sub: "u-admin", email: "admin@acme.com", org: "acme", orgAdmin: true };
const USAGE = { inputTokens: 10, outputTokens: 3, costUsd: 1.3 };

function running(overrides: Record<string, unknown> = {}) {
  return item("box", { phase: "Ready", status: "running", usage30d: USAGE, spend30d: "USD 1.30", ...overrides });
}

function list(budgets: ReturnType<typeof budget>[]) {
  return { month: "2026-11", currency: "USD", defaults: { org: null, user: null, sandbox: null }, budgets };
}

function server(session: unknown, budgets: ReturnType<typeof budget>[]) {
  return new FakeServer()
    .on("GET", PATH, { status: 200, body: session })
    .on("GET", `${PATH}/terminals`, { status: 200, body: { terminals: [] } })
    .on("GET", BUDGETS, { status: 200, body: list(budgets) });
}

afterEach(() => {
  vi.useRealTimers();
});

describe("SessionPage spend", () => {
  it("shows the session's 30 days and a budget of its owner that is used up", async () => {
    const s = server(running(), [
      budget("org", "acme", { monthlyUsd: 100, spentUsd: 1.3 }),
      budget("user", "dev@acme.com", { monthlyUsd: 5, spentUsd: 5, remainingUsd: 0 }),
      budget("sandbox", "box", { monthlyUsd: 10, spentUsd: 1.3 }),
      budget("sandbox", "other", { monthlyUsd: 1, spentUsd: 2 }),
    ]);
    renderWithApi(<SessionPage id="box" who={DEV} />, s);
    expect(await screen.findByTestId("session-spend")).toHaveTextContent(
      "Spend, last 30 days: $1.30 · 10 in / 3 out tokens",
    );
    const notice = await screen.findByTestId("budget-reached");
    expect(notice).toHaveAttribute("role", "alert");
    expect(notice).toHaveTextContent(
      "Monthly budget of $5.00 for user dev@acme.com reached (resets 2026-12-01 UTC): " +
        "the agent's model requests are refused.",
    );
    expect(screen.getAllByTestId("budget-reached")).toHaveLength(1); // not another session's
    expect(screen.getByRole("link", { name: "Usage and budgets" })).toHaveAttribute("href", "/sandbox/usage");
    // everything was in the list: nothing asked by name
    expect(s.calls.filter((c) => c.path.startsWith(`${BUDGETS}/`))).toEqual([]);
  });

  it("shows no spend and asks for no budget when the item has no usage (no ledger)", async () => {
    const s = server(item("box", { phase: "Ready", status: "running" }), []);
    renderWithApi(<SessionPage id="box" who={DEV} />, s);
    await screen.findByTestId("terminal-stand-in");
    expect(screen.queryByTestId("session-spend")).toBeNull();
    expect(s.calls.filter((c) => c.path.startsWith(BUDGETS))).toEqual([]);
  });

  it("shows the spend while provisioning too", async () => {
    const s = server(running({ phase: "Provisioning", status: "pending" }), []);
    renderWithApi(<SessionPage id="box" who={DEV} />, s);
    expect(await screen.findByTestId("session-spend")).toHaveTextContent("$1.30");
  });

  it("asks an org admin's session budget by name (their list holds only budgets set)", async () => {
    const s = server(running(), [budget("org", "acme", { monthlyUsd: 100, spentUsd: 1.3 })])
      .on("GET", `${BUDGETS}/sandbox/box`, {
        status: 200,
        body: budget("sandbox", "box", { monthlyUsd: 1, spentUsd: 1.3, remainingUsd: 0 }),
      })
      .on("GET", "/api/v1/sandbox/sessions", { status: 200, body: { sandboxes: [running()] } })
      .on("GET", `${BUDGETS}/user/admin%40acme.com`, {
        status: 200,
        body: budget("user", "admin@acme.com", { monthlyUsd: 1.3, spentUsd: 1.3, remainingUsd: 0 }),
      });
    renderWithApi(<SessionPage id="box" who={ADMIN} />, s);
    await waitFor(() => expect(screen.getAllByTestId("budget-reached")).toHaveLength(2));
    expect(screen.getAllByTestId("budget-reached").map((n) => n.textContent)).toEqual([
      expect.stringContaining("Monthly budget of $1.30 for user admin@acme.com reached"),
      expect.stringContaining("Monthly budget of $1.00 for sandbox box reached"),
    ]);
  });

  it("does not take an org admin's own budget for another user's session", async () => {
    const s = server(running(), [
      budget("org", "acme", { monthlyUsd: 100 }),
      budget("user", "admin@acme.com", { monthlyUsd: 1, spentUsd: 1, source: "set" }),
      budget("user", "someone@acme.com", { monthlyUsd: 1, spentUsd: 1, source: "set" }),
    ])
      .on("GET", `${BUDGETS}/sandbox/box`, { status: 200, body: budget("sandbox", "box", { monthlyUsd: null }) })
      .on("GET", "/api/v1/sandbox/sessions", { status: 200, body: { sandboxes: [] } });
    renderWithApi(<SessionPage id="box" who={ADMIN} />, s);
    await screen.findByTestId("session-spend");
    await waitFor(() => expect(s.callsTo("GET", "/api/v1/sandbox/sessions")).toHaveLength(1));
    await act(async () => {
      await new Promise((resolve) => setTimeout(resolve, 50));
    });
    expect(screen.queryByTestId("budget-reached")).toBeNull();
    expect(s.calls.filter((c) => c.path.startsWith(`${BUDGETS}/user/`))).toEqual([]);
  });

  it("keeps the spend and the budgets current while the terminal is open", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    let cost = 0.5;
    let spent = 0.5;
    const s = new FakeServer()
      .on("GET", PATH, () => ({ status: 200, body: running({ usage30d: { ...USAGE, costUsd: cost } }) }))
      .on("GET", `${PATH}/terminals`, { status: 200, body: { terminals: [] } })
      .on("GET", BUDGETS, () => ({
        status: 200,
        body: list([budget("sandbox", "box", { monthlyUsd: 1, spentUsd: spent })]),
      }));
    renderWithApi(<SessionPage id="box" who={DEV} />, s);
    expect(await screen.findByTestId("session-spend")).toHaveTextContent("$0.50");
    await waitFor(() => expect(s.callsTo("GET", BUDGETS)).toHaveLength(1));
    expect(screen.queryByTestId("budget-reached")).toBeNull();
    const sessionReads = s.callsTo("GET", PATH).length;

    cost = 1.3;
    spent = 1.3;
    await act(async () => {
      await vi.advanceTimersByTimeAsync(SPEND_POLL_MS);
    });
    await waitFor(() => expect(screen.getByTestId("session-spend")).toHaveTextContent("$1.30"));
    expect(await screen.findByTestId("budget-reached")).toHaveTextContent(
      "Monthly budget of $1.00 for sandbox box reached",
    );
    expect(s.callsTo("GET", PATH).length).toBe(sessionReads + 1);
    // the terminal stayed mounted
    expect(screen.getByTestId("terminal-stand-in")).toBeInTheDocument();
  });
});
