import { describe, expect, it } from "vitest";
import type { UsageDay } from "./api/client";
import { budget } from "./test/render";
import {
  applicableBudgets,
  chartBars,
  chartSummary,
  describeBudget,
  formatCount,
  formatTokens,
  formatUsd,
  isReached,
  reachedMessage,
  resetDate,
  share,
  sinceDays,
  usageLine,
  userBudgetName,
} from "./usage";

function day(date: string, costUsd: number, requests = costUsd > 0 ? 1 : 0): UsageDay {
  return {
    date,
    costUsd,
    requests,
    inputTokens: 0,
    outputTokens: 0,
    cacheReadTokens: 0,
    cacheWriteTokens: 0,
  };
}

describe("formatting", () => {
  it("writes dollars with cents, grouping, and the digits of sub-cent amounts", () => {
    expect(formatUsd(0)).toBe("$0.00");
    expect(formatUsd(5)).toBe("$5.00");
    expect(formatUsd(1.3)).toBe("$1.30");
    expect(formatUsd(1234.5)).toBe("$1,234.50");
    expect(formatUsd(0.016)).toBe("$0.02");
    // a few tokens cost well under a cent: the gateway's message keeps the digits too
    expect(formatUsd(0.0042)).toBe("$0.0042");
    expect(formatUsd(0.000000013)).toBe("$0.000000013");
    expect(formatUsd(Number.NaN)).toBe("–");
  });

  it("writes counts with grouping and tokens in a few characters", () => {
    expect(formatCount(51200)).toBe("51,200");
    expect(formatTokens(0)).toBe("0");
    expect(formatTokens(950)).toBe("950");
    expect(formatTokens(1000)).toBe("1k");
    expect(formatTokens(51_200)).toBe("51.2k");
    expect(formatTokens(123_456)).toBe("123k");
    expect(formatTokens(3_400_000)).toBe("3.4M");
  });

  it("puts a session's 30 days on one line", () => {
    expect(usageLine({ inputTokens: 10, outputTokens: 3, costUsd: 1.3 })).toBe(
      "$1.30 · 10 in / 3 out tokens",
    );
    expect(usageLine({ inputTokens: 51_200, outputTokens: 8_800, costUsd: 0 })).toBe(
      "$0.00 · 51.2k in / 8.8k out tokens",
    );
  });

  it("gives shares of a total, and none of nothing", () => {
    expect(share(1.41, 1.93)).toBe("73%");
    expect(share(0.001, 10)).toBe("<1%");
    expect(share(0, 10)).toBe("0%");
    expect(share(0, 0)).toBe("–");
  });

  it("counts the period back from today in UTC, today included", () => {
    const now = new Date("2026-12-06T23:30:00Z");
    expect(sinceDays(30, now)).toBe("2026-11-07");
    expect(sinceDays(7, now)).toBe("2026-11-30");
    expect(sinceDays(1, now)).toBe("2026-12-06");
    expect(sinceDays(90, new Date("2026-03-01T00:00:00Z"))).toBe("2025-12-02");
  });
});

describe("chart geometry", () => {
  it("scales bars to the highest day, oldest first, each in its own slot", () => {
    const days = [day("2026-11-01", 0), day("2026-11-02", 2), day("2026-11-03", 1), day("2026-11-04", 0.5)];
    const { bars, max, peak } = chartBars(days, 400, 100);
    expect(max).toBe(2);
    expect(peak?.date).toBe("2026-11-02");
    expect(bars.map((b) => b.day.date)).toEqual(days.map((d) => d.date));
    expect(bars.map((b) => b.height)).toEqual([0, 100, 50, 25]);
    expect(bars.map((b) => b.y)).toEqual([100, 0, 50, 75]);
    // slots of 100 with a gap of 4 (at most 20% of a slot)
    expect(bars.map((b) => b.x)).toEqual([2, 102, 202, 302]);
    expect(bars.every((b) => b.width === 96)).toBe(true);
  });

  it("keeps a tiny spend visible next to a big one, and draws nothing for no spend", () => {
    const { bars } = chartBars([day("a", 1000), day("b", 0.0001), day("c", 0)], 30, 100);
    expect(bars[1]!.height).toBe(1);
    expect(bars[2]!.height).toBe(0);
    const none = chartBars([day("a", 0), day("b", 0)], 30, 100);
    expect(none.max).toBe(0);
    expect(none.peak).toBeNull();
    expect(none.bars.every((b) => b.height === 0 && b.y === 100)).toBe(true);
  });

  it("leaves a gap of a fifth of the slot when slots are narrow", () => {
    const days = Array.from({ length: 90 }, (_, i) => day(`d${i}`, 1));
    const { bars } = chartBars(days, 720, 100);
    expect(bars[0]!.width).toBeCloseTo(6.4);
    expect(bars[89]!.x + bars[89]!.width).toBeCloseTo(720 - 0.8);
  });

  it("summarises the chart for a screen reader", () => {
    expect(chartSummary([day("2026-11-01", 0), day("2026-11-02", 1.25), day("2026-11-03", 0.05)])).toBe(
      "$1.30 spent from 2026-11-01 to 2026-11-03; the highest day was 2026-11-02 with $1.25.",
    );
    expect(chartSummary([day("2026-11-01", 0), day("2026-11-02", 0)])).toBe(
      "No model spend from 2026-11-01 to 2026-11-02.",
    );
    expect(chartSummary([])).toBe("No model spend.");
  });
});

describe("budgets", () => {
  it("names users by their lowercased email, else the subject", () => {
    expect(userBudgetName(" Dev@Acme.com ", "sub-1")).toBe("dev@acme.com");
    expect(userBudgetName("", "sub-1")).toBe("sub-1");
  });

  it("is reached at or over the monthly amount, never without a cap", () => {
    expect(isReached(budget("user", "a", { monthlyUsd: 5, spentUsd: 4.99 }))).toBe(false);
    expect(isReached(budget("user", "a", { monthlyUsd: 5, spentUsd: 5 }))).toBe(true);
    expect(isReached(budget("user", "a", { monthlyUsd: 1, spentUsd: 1.3 }))).toBe(true);
    expect(isReached(budget("user", "a", { monthlyUsd: 0, spentUsd: 0 }))).toBe(true);
    expect(isReached(budget("user", "a", { monthlyUsd: null, spentUsd: 100 }))).toBe(false);
  });

  it("says when a month's budget starts over", () => {
    expect(resetDate("2026-11")).toBe("2026-12-01");
    expect(resetDate("2026-12")).toBe("2027-01-01");
    expect(resetDate("nonsense")).toBe("");
  });

  it("says which budget is reached, as the gateway names it", () => {
    expect(describeBudget({ scope: "sandbox", name: "box" })).toBe("sandbox box");
    expect(reachedMessage(budget("user", "dev@acme.com", { monthlyUsd: 5, spentUsd: 5, month: "2026-12" }))).toBe(
      "Monthly budget of $5.00 for user dev@acme.com reached (resets 2027-01-01 UTC): " +
        "the agent's model requests are refused.",
    );
  });

  it("picks the org's, the owner's and the session's budget, in the gateway's order", () => {
    const all = [
      budget("sandbox", "other"),
      budget("sandbox", "box", { monthlyUsd: 1 }),
      budget("user", "someone@acme.com"),
      budget("user", "dev@acme.com", { monthlyUsd: 2 }),
      budget("org", "acme", { monthlyUsd: 100 }),
      budget("sandbox", "box", { monthlyUsd: 99 }), // a second answer for a key: the first wins
    ];
    const picked = applicableBudgets(all, { sandbox: "box", user: "dev@acme.com" });
    expect(picked.map((b) => `${b.scope}/${b.name}/${b.monthlyUsd}`)).toEqual([
      "org/acme/100",
      "user/dev@acme.com/2",
      "sandbox/box/1",
    ]);
    // the owner unknown: no user's budget is taken for theirs
    expect(applicableBudgets(all, { sandbox: "box", user: null }).map((b) => b.scope)).toEqual([
      "org",
      "sandbox",
    ]);
  });
});
