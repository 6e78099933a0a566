import { render } from "@testing-library/react";
import type { ReactElement } from "react";
import { ApiContext } from "../api/context";
import type { Budget, UsageReport } from "../api/client";
import type { FakeServer } from "./fakeServer";

export function renderWithApi(ui: ReactElement, server: FakeServer) {
  return render(<ApiContext.Provider value={server.api()}>{ui}</ApiContext.Provider>);
}

export function agent(id: string, overrides: Record<string, unknown> = {}) {
  return {
    id,
    label: id.replace(/(^|-)(\w)/g, (_m, sep: string, c: string) => (sep ? " " : "") + c.toUpperCase()),
    blurb: `${id} blurb`,
    installed: true,
    installHint: "",
    byos: id === "claude-code",
    ...overrides,
  };
}

export function item(id: string, overrides: Record<string, unknown> = {}) {
  return {
    id,
    name: id,
    agent: "aider",
    status: "pending",
    createdAt: "2026-11-27T18:00:00Z",
    repo: "",
    sessions: 0,
    previews: [],
    conditions: [],
    attachUrl: `/api/v1/sandbox/sessions/${id}/attach`,
    ...overrides,
  };
}

/** A budget as `GET /budgets` answers it (docs/gateway.md). */
export function budget(scope: string, name: string, overrides: Partial<Budget> = {}): Budget {
  return {
    scope,
    name,
    monthlyUsd: 5,
    source: "default",
    month: "2026-11",
    spentUsd: 0,
    reservedUsd: 0,
    remainingUsd: 5,
    ...overrides,
  };
}

function zeros() {
  return { requests: 0, inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 0 };
}

/** A `GET /usage` answer: one daily bucket per cost, from 2026-12-01 on. */
export function usageReport(overrides: Partial<UsageReport> = {}, costs: number[] = [0, 0.5, 1.3]): UsageReport {
  const days = costs.map((costUsd, i) => ({
    ...zeros(),
    date: `2026-12-${String(i + 1).padStart(2, "0")}`,
    requests: costUsd > 0 ? 1 : 0,
    costUsd,
  }));
  const total = costs.reduce((a, b) => a + b, 0);
  return {
    scope: "org",
    org: "acme",
    groupBy: "user",
    currency: "USD",
    since: `${days[0]?.date ?? "2026-12-01"}T00:00:00Z`,
    until: "2026-12-06T15:30:00Z",
    totals: { ...zeros(), requests: days.filter((d) => d.costUsd > 0).length, inputTokens: 20, outputTokens: 6, costUsd: total },
    days,
    groups: [],
    ...overrides,
  };
}
