import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import type { WhoAmI } from "../api/client";
import { FakeServer } from "../test/fakeServer";
import { budget, renderWithApi, usageReport } from "../test/render";
import { sinceDays } from "../usage";
import { UsagePage } from "./Usage";

const ADMIN: WhoAmI = { sub: "u-admin", email: "admin@acme.com", org: "acme", orgAdmin: true };
const DEV: WhoAmI = { sub: "u-dev", email: "dev@acme.com", org: "acme", orgAdmin: false };

const BY_USER = [
  { key: "dev@acme.com", requests: 3, inputTokens: 30, outputTokens: 9, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 1.3 },
  { key: "ops@acme.com", requests: 1, inputTokens: 10, outputTokens: 3, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 0.5 },
];
const BY_MODEL = [
  { key: "gpt-4.1-mini", requests: 4, inputTokens: 40, outputTokens: 12, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 1.8 },
];
const BY_SANDBOX = [
  { key: "spender", requests: 4, inputTokens: 40, outputTokens: 12, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 1.8 },
];
const GROUPS: Record<string, typeof BY_USER> = { user: BY_USER, model: BY_MODEL, sandbox: BY_SANDBOX };

function budgetList(budgets = [budget("org", "acme", { monthlyUsd: 100, spentUsd: 1.8, remainingUsd: 98.2 })]) {
  return {
    month: "2026-12",
    currency: "USD",
    defaults: { org: 100, user: null, sandbox: 5 },
    budgets,
  };
}

function server(list = budgetList()) {
  return new FakeServer()
    .on("GET", "/api/v1/sandbox/usage", ({ url }) => {
      const scope = url.searchParams.get("scope") ?? "own";
      const groupBy = url.searchParams.get("groupBy") ?? "sandbox";
      return {
        status: 200,
        body: usageReport({ scope, groupBy, groups: GROUPS[groupBy] ?? [] }, [0, 0.5, 1.3]),
      };
    })
    .on("GET", "/api/v1/sandbox/budgets", { status: 200, body: list });
}

function usageQueries(s: FakeServer): string[] {
  return s.calls
    .filter((c) => c.method === "GET" && c.path === "/api/v1/sandbox/usage")
    .map((c) => c.query ?? "");
}

describe("Usage page for an org admin", () => {
  it("asks for the org's usage by user over 30 days and shows totals, chart and table", async () => {
    const s = server();
    renderWithApi(<UsagePage who={ADMIN} />, s);
    expect(await screen.findByRole("heading", { name: "Model usage of acme" })).toBeInTheDocument();
    const table = await screen.findByTestId("usage-groups");
    expect(usageQueries(s)).toEqual([`scope=org&groupBy=user&since=${sinceDays(30)}`]);

    const totals = screen.getByTestId("usage-totals");
    expect(within(totals).getByText("Cost").nextSibling).toHaveTextContent("$1.80");
    expect(within(totals).getByText("Requests").nextSibling).toHaveTextContent("2");

    // the chart: an image with a title and a summary, one bar per day, the numbers in a table
    const chart = screen.getByRole("img", { name: /Model spend by day/ });
    expect(chart).toHaveAccessibleDescription(
      "$1.80 spent from 2026-12-01 to 2026-12-03; the highest day was 2026-12-03 with $1.30.",
    );
    const bars = chart.querySelectorAll("rect.usage-bar");
    expect([...bars].map((b) => b.getAttribute("data-date"))).toEqual(["2026-12-01", "2026-12-02", "2026-12-03"]);
    expect(Number(bars[0]!.getAttribute("height"))).toBe(0);
    expect(Number(bars[2]!.getAttribute("height"))).toBeGreaterThan(Number(bars[1]!.getAttribute("height")));
    expect(bars[2]!.querySelector("title")).toHaveTextContent("2026-12-03: $1.30, 1 requests");
    const daysTable = screen.getByRole("table", { name: "Model spend by day" });
    const dayRows = within(daysTable).getAllByRole("row").slice(1);
    expect(dayRows.map((r) => r.textContent)).toEqual([
      "2026-12-03100$1.30",
      "2026-12-02100$0.50",
      "2026-12-01000$0.00",
    ]);

    // by user, highest cost first as the server orders it, with each share of the total
    expect(table).toHaveAccessibleName("Model spend by user");
    const rows = within(table).getAllByRole("row");
    expect(within(rows[0]!).getByRole("columnheader", { name: "User" })).toBeInTheDocument();
    expect(rows.slice(1).map((r) => r.textContent)).toEqual([
      "dev@acme.com3309$1.3072%",
      "ops@acme.com1103$0.5028%",
    ]);
  });

  it("switches the table to models and sessions (sessions link to their page) and the period", async () => {
    const user = userEvent.setup();
    const s = server();
    renderWithApi(<UsagePage who={ADMIN} />, s);
    await screen.findByTestId("usage-groups");

    await user.click(screen.getByRole("radio", { name: "Model" }));
    await waitFor(() => expect(screen.getByTestId("usage-groups")).toHaveAccessibleName("Model spend by model"));
    expect(screen.getByRole("rowheader", { name: "gpt-4.1-mini" })).toBeInTheDocument();
    expect(screen.getByRole("heading", { name: "By model" })).toBeInTheDocument();

    await user.click(screen.getByRole("radio", { name: "Session" }));
    const link = await screen.findByRole("link", { name: "spender" });
    expect(link).toHaveAttribute("href", "/sandbox/spender");

    await user.selectOptions(screen.getByLabelText("Period"), "Last 7 days");
    await waitFor(() => expect(usageQueries(s)).toHaveLength(4));
    expect(usageQueries(s)).toEqual([
      `scope=org&groupBy=user&since=${sinceDays(30)}`,
      `scope=org&groupBy=model&since=${sinceDays(30)}`,
      `scope=org&groupBy=sandbox&since=${sinceDays(30)}`,
      `scope=org&groupBy=sandbox&since=${sinceDays(7)}`,
    ]);

    // an admin can look at their own sessions only, too
    await user.click(screen.getByRole("radio", { name: "My sessions" }));
    expect(await screen.findByRole("heading", { name: "Your model usage" })).toBeInTheDocument();
    expect(usageQueries(s).at(-1)).toBe(`scope=own&groupBy=sandbox&since=${sinceDays(7)}`);
  });

  it("says when there is nothing in the period, and shows the server's refusal", async () => {
    const s = new FakeServer()
      .on("GET", "/api/v1/sandbox/usage", { status: 200, body: usageReport({ groups: [] }, [0, 0]) })
      .on("GET", "/api/v1/sandbox/budgets", { status: 200, body: budgetList() });
    renderWithApi(<UsagePage who={ADMIN} />, s);
    expect(await screen.findByText("No model requests in this period.")).toBeInTheDocument();
    expect(screen.getByRole("img", { name: /Model spend by day/ })).toHaveAccessibleDescription(
      "No model spend from 2026-12-01 to 2026-12-02.",
    );

    const down = new FakeServer()
      .on("GET", "/api/v1/sandbox/usage", {
        status: 503,
        body: { error: "usage-unavailable", detail: "model usage is not recorded by this server (no gateway ledger)" },
      })
      .on("GET", "/api/v1/sandbox/budgets", { status: 503, body: { error: "usage-unavailable", detail: "no ledger" } });
    renderWithApi(<UsagePage who={ADMIN} />, down);
    expect(await screen.findByText(/Could not load the usage: model usage is not recorded/)).toHaveAttribute(
      "role",
      "alert",
    );
    expect(await screen.findByText("Could not load the budgets: no ledger")).toBeInTheDocument();
  });
});

describe("Usage page for everyone else", () => {
  it("shows the caller's own usage by session, the budgets that hold them, and no edit form", async () => {
    const s = server(
      budgetList([
        budget("org", "acme", { monthlyUsd: 100, spentUsd: 1.8, remainingUsd: 98.2 }),
        budget("user", "dev@acme.com", { monthlyUsd: null, remainingUsd: null, spentUsd: 1.3 }),
        budget("sandbox", "spender", { monthlyUsd: 1, spentUsd: 1.3, remainingUsd: 0 }),
      ]),
    );
    renderWithApi(<UsagePage who={DEV} />, s);
    expect(await screen.findByRole("heading", { name: "Your model usage" })).toBeInTheDocument();
    await screen.findByTestId("usage-groups");
    expect(usageQueries(s)).toEqual([`scope=own&groupBy=sandbox&since=${sinceDays(30)}`]);
    expect(screen.queryByRole("radio", { name: "Whole org" })).toBeNull();

    const budgets = await screen.findByTestId("budgets-table");
    const spender = within(budgets).getByTestId("budget-sandbox-spender");
    expect(spender).toHaveTextContent("Reached");
    expect(spender).toHaveTextContent("$1.00");
    expect(within(budgets).getByTestId("budget-user-dev@acme.com")).toHaveTextContent("no cap");
    expect(within(budgets).getByTestId("budget-user-dev@acme.com")).not.toHaveTextContent("Reached");
    expect(screen.getByTestId("budget-defaults")).toHaveTextContent(
      "Operator defaults per month: org $100.00 · user no cap · session $5.00.",
    );
    expect(screen.queryByRole("button", { name: /Edit budget/ })).toBeNull();
    expect(screen.queryByRole("button", { name: "Save budget" })).toBeNull();
    expect(screen.getByText("Org admins set budgets.")).toBeInTheDocument();
  });

  it("treats a caller whoami could not name as a user who sees their own usage", async () => {
    const s = server();
    renderWithApi(<UsagePage who={null} />, s);
    await screen.findByTestId("usage-groups");
    expect(usageQueries(s)[0]).toMatch(/^scope=own&/);
  });
});

describe("Budget edits", () => {
  const SET = budget("user", "dev@acme.com", {
    monthlyUsd: 5,
    source: "set",
    spentUsd: 1.3,
    remainingUsd: 3.7,
    updatedAt: "2026-12-05T10:00:00Z",
    updatedBy: "admin@acme.com",
  });

  function editable() {
    const state = { list: budgetList([budget("org", "acme", { monthlyUsd: 100 }), SET]) };
    const s = server()
      .on("GET", "/api/v1/sandbox/budgets", () => ({ status: 200, body: state.list }))
      .on("PUT", "/api/v1/sandbox/budgets/user/ops%40acme.com", ({ body }) => {
        const amount = (body as { monthlyUsd: string | null }).monthlyUsd;
        const monthlyUsd = amount === null ? null : Number(amount);
        const set = budget("user", "ops@acme.com", { monthlyUsd, source: "set", remainingUsd: monthlyUsd });
        state.list = { ...state.list, budgets: [...state.list.budgets, set] };
        return { status: 200, body: set };
      })
      .on("DELETE", "/api/v1/sandbox/budgets/user/dev%40acme.com", () => {
        const back = budget("user", "dev@acme.com", { monthlyUsd: null, remainingUsd: null, spentUsd: 1.3 });
        state.list = { ...state.list, budgets: [state.list.budgets[0]!] };
        return { status: 200, body: back };
      });
    return s;
  }

  it("sets a user's budget with the amount as typed and lists it", async () => {
    const user = userEvent.setup();
    const s = editable();
    renderWithApi(<UsagePage who={ADMIN} />, s);
    const row = await screen.findByTestId("budget-user-dev@acme.com");
    expect(row).toHaveTextContent("set by admin@acme.com on 2026-12-05");

    await user.selectOptions(screen.getByLabelText("Scope"), "User");
    await user.type(screen.getByLabelText("User email"), "ops@acme.com");
    await user.type(screen.getByLabelText("Monthly budget (USD)"), "12.50");
    await user.click(screen.getByRole("button", { name: "Save budget" }));
    expect(await screen.findByText("Monthly budget of user ops@acme.com is now $12.50.")).toHaveAttribute(
      "role",
      "status",
    );
    expect(s.callsTo("PUT", "/api/v1/sandbox/budgets/user/ops%40acme.com")[0]!.body).toEqual({
      monthlyUsd: "12.50",
    });
    expect(await screen.findByTestId("budget-user-ops@acme.com")).toHaveTextContent("$12.50");
    expect(s.callsTo("GET", "/api/v1/sandbox/budgets")).toHaveLength(2);
  });

  it("sends null for No cap, and never an empty amount (the server would read it as no cap)", async () => {
    const user = userEvent.setup();
    const s = editable();
    renderWithApi(<UsagePage who={ADMIN} />, s);
    await screen.findByTestId("budgets-table");
    await user.type(screen.getByLabelText("User email"), "ops@acme.com");
    await user.click(screen.getByRole("button", { name: "Save budget" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Enter a monthly amount in USD, or choose No cap.");
    expect(s.calls.filter((c) => c.method === "PUT")).toHaveLength(0);

    await user.click(screen.getByLabelText("No cap"));
    expect(screen.getByLabelText("Monthly budget (USD)")).toBeDisabled();
    await user.click(screen.getByRole("button", { name: "Save budget" }));
    expect(await screen.findByText("Monthly budget of user ops@acme.com is now no cap.")).toBeInTheDocument();
    expect(s.callsTo("PUT", "/api/v1/sandbox/budgets/user/ops%40acme.com")[0]!.body).toEqual({ monthlyUsd: null });
  });

  it("edits a listed budget from its row and resets one that was set", async () => {
    const user = userEvent.setup();
    const s = editable();
    renderWithApi(<UsagePage who={ADMIN} />, s);
    await screen.findByTestId("budget-user-dev@acme.com");
    // the org's budget is a default: nothing to reset
    expect(screen.queryByRole("button", { name: "Reset budget of org acme to the default" })).toBeNull();

    await user.click(screen.getByRole("button", { name: "Edit budget of user dev@acme.com" }));
    expect(screen.getByLabelText("Scope")).toHaveValue("user");
    expect(screen.getByLabelText("User email")).toHaveValue("dev@acme.com");
    expect(screen.getByLabelText("Monthly budget (USD)")).toHaveValue("5");
    await waitFor(() => expect(screen.getByLabelText("Monthly budget (USD)")).toHaveFocus());

    await user.click(screen.getByRole("button", { name: "Reset budget of user dev@acme.com to the default" }));
    expect(
      await screen.findByText("Budget of user dev@acme.com is back to the default (no cap)."),
    ).toBeInTheDocument();
    await waitFor(() => expect(screen.queryByTestId("budget-user-dev@acme.com")).toBeNull());
    expect(s.callsTo("DELETE", "/api/v1/sandbox/budgets/user/dev%40acme.com")).toHaveLength(1);
  });

  it("prefills the org's name for the org scope", async () => {
    const user = userEvent.setup();
    renderWithApi(<UsagePage who={ADMIN} />, editable());
    await screen.findByTestId("budgets-table");
    await user.selectOptions(screen.getByLabelText("Scope"), "Org");
    expect(screen.getByLabelText("Org name")).toHaveValue("acme");
    await user.selectOptions(screen.getByLabelText("Scope"), "Session");
    expect(screen.getByLabelText("Session id")).toHaveValue("");
  });

  it.each([
    [400, { error: "invalid-budget", detail: "budget '-1' must be a finite amount of at least 0" }, "-1", "budget '-1' must be a finite amount of at least 0"],
    [403, { error: "other-org", detail: 'budgets are set within your own org ("acme"), not "globex"' }, "5", 'budgets are set within your own org ("acme"), not "globex"'],
    [403, { error: "org-admin-required", detail: "budgets are set by org admins" }, "5", "budgets are set by org admins"],
    [404, { error: "sandbox-not-found", detail: 'sandbox "nope" not found in namespace "acme"' }, "5", 'sandbox "nope" not found'],
  ])("shows the server's %i detail and keeps the form", async (status, body, amount, shown) => {
    const user = userEvent.setup();
    const s = server().on("PUT", "/api/v1/sandbox/budgets/user/x%40acme.com", { status, body });
    renderWithApi(<UsagePage who={ADMIN} />, s);
    await screen.findByTestId("budgets-table");
    await user.type(screen.getByLabelText("User email"), "x@acme.com");
    await user.type(screen.getByLabelText("Monthly budget (USD)"), amount);
    await user.click(screen.getByRole("button", { name: "Save budget" }));
    expect(await screen.findByTestId("budget-error")).toHaveTextContent(shown);
    expect(screen.getByTestId("budget-error")).toHaveAttribute("role", "alert");
    expect(screen.getByLabelText("Monthly budget (USD)")).toHaveValue(amount);
    expect(screen.getByRole("status")).toHaveTextContent("");
  });

  it("shows a refused reset", async () => {
    const user = userEvent.setup();
    const s = server(budgetList([SET])).on("DELETE", "/api/v1/sandbox/budgets/user/dev%40acme.com", {
      status: 403,
      body: { error: "org-admin-required", detail: "budgets are set by org admins" },
    });
    renderWithApi(<UsagePage who={ADMIN} />, s);
    await user.click(await screen.findByRole("button", { name: "Reset budget of user dev@acme.com to the default" }));
    expect(await screen.findByTestId("budget-error")).toHaveTextContent("budgets are set by org admins");
    expect(screen.getByTestId("budget-user-dev@acme.com")).toBeInTheDocument();
  });
});
