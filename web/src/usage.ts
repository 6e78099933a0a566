/**
 * Model usage and budgets in the console: money and token formatting, the daily chart's
 * geometry, and which budgets apply to a session and whether one is reached. Pure
 * functions over what the API answers (docs/gateway.md, "Usage and budgets"); nothing
 * here invents a field the API does not send.
 */
import type { Budget, BudgetScope, Usage30d, UsageDay } from "./api/client";

const USD = new Intl.NumberFormat("en-US", {
  style: "currency",
  currency: "USD",
  minimumFractionDigits: 2,
  maximumFractionDigits: 2,
});
const COUNT = new Intl.NumberFormat("en-US");

/**
 * `$5.00`, `$1,234.50`; an amount under a cent keeps its digits (`$0.0042`), as the
 * gateway writes it in its budget message: a few tokens cost well under a cent.
 */
export function formatUsd(amount: number): string {
  if (!Number.isFinite(amount)) return "–";
  if (amount !== 0 && Math.abs(amount) < 0.01) {
    const digits = amount.toFixed(9).replace(/0+$/, "");
    return amount < 0 ? `-$${digits.slice(1)}` : `$${digits}`;
  }
  return USD.format(amount);
}

/** A count with grouping: `51,200`. */
export function formatCount(n: number): string {
  return COUNT.format(n);
}

/** A token count in a few characters: `950`, `51.2k`, `3.4M`. */
export function formatTokens(n: number): string {
  if (n < 1000) return String(n);
  if (n < 1_000_000) return `${trimOne(n / 1000)}k`;
  return `${trimOne(n / 1_000_000)}M`;
}

function trimOne(value: number): string {
  return value >= 100 ? String(Math.round(value)) : value.toFixed(1).replace(/\.0$/, "");
}

/** A session's last 30 days in one line: `$1.30 · 10 in / 3 out tokens`. */
export function usageLine(usage: Usage30d): string {
  return (
    `${formatUsd(usage.costUsd)} · ${formatTokens(usage.inputTokens)} in / ` +
    `${formatTokens(usage.outputTokens)} out tokens`
  );
}

/** `42%` of the total; `–` when the total is zero. */
export function share(part: number, total: number): string {
  if (!(total > 0)) return "–";
  const pct = (part / total) * 100;
  return pct > 0 && pct < 1 ? "<1%" : `${Math.round(pct)}%`;
}

/** `since` for the last `days` days including today (UTC), as the API takes it. */
export function sinceDays(days: number, now: Date = new Date()): string {
  const start = new Date(
    Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - (days - 1)),
  );
  return start.toISOString().slice(0, 10);
}

// --- the chart ------------------------------------------------------------------------

export interface Bar {
  day: UsageDay;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface ChartGeometry {
  bars: Bar[];
  /** the highest day's cost (the top of the scale); 0 when nothing was spent */
  max: number;
  /** the day with the highest cost, if any was spent */
  peak: UsageDay | null;
}

/**
 * Bars for the daily cost chart in a `width` × `height` box (SVG user units), oldest day
 * on the left. Heights scale to the highest day; a day that cost anything at all is at
 * least one unit tall, so a tiny spend is still visible next to a big one.
 */
export function chartBars(days: UsageDay[], width: number, height: number): ChartGeometry {
  const slot = days.length ? width / days.length : width;
  const gap = Math.min(slot * 0.2, 4);
  let peak: UsageDay | null = null;
  for (const day of days) if (day.costUsd > 0 && (!peak || day.costUsd > peak.costUsd)) peak = day;
  const max = peak?.costUsd ?? 0;
  const bars = days.map((day, index) => {
    const scaled = max > 0 ? (day.costUsd / max) * height : 0;
    const barHeight = day.costUsd > 0 ? Math.max(1, scaled) : 0;
    return {
      day,
      x: index * slot + gap / 2,
      y: height - barHeight,
      width: Math.max(slot - gap, 0.5),
      height: barHeight,
    };
  });
  return { bars, max, peak };
}

/** What the chart says to a screen reader (its `<desc>`). */
export function chartSummary(days: UsageDay[]): string {
  const { max, peak } = chartBars(days, 1, 1);
  const first = days[0]?.date;
  const last = days[days.length - 1]?.date;
  const total = days.reduce((sum, d) => sum + d.costUsd, 0);
  const range = first && last ? `from ${first} to ${last}` : "";
  if (!peak) return `No model spend ${range}.`.replace(" .", ".");
  return `${formatUsd(total)} spent ${range}; the highest day was ${peak.date} with ${formatUsd(max)}.`;
}

// --- budgets --------------------------------------------------------------------------

/** The name a user's budget goes by: the email, lowercased, else the subject. */
export function userBudgetName(email: string, sub: string): string {
  return email.trim().toLowerCase() || sub.trim();
}

/** `org acme`, `user dev@acme.com`, `sandbox box`: how the gateway names a budget. */
export function describeBudget(budget: Pick<Budget, "scope" | "name">): string {
  return `${budget.scope} ${budget.name}`;
}

export function isReached(budget: Budget): boolean {
  return budget.monthlyUsd !== null && budget.spentUsd >= budget.monthlyUsd;
}

/** `2026-12` → `2027-01-01`: when a calendar month's (UTC) budget starts over. */
export function resetDate(month: string): string {
  const match = /^(\d{4})-(\d{2})$/.exec(month);
  if (!match) return "";
  const year = Number(match[1]);
  const next = Number(match[2]); // 1-based month: as a 0-based index it is the next one
  return new Date(Date.UTC(year, next, 1)).toISOString().slice(0, 10);
}

/** The console's line for a budget that is used up (the gateway's 429 says the same). */
export function reachedMessage(budget: Budget): string {
  const limit = formatUsd(budget.monthlyUsd ?? 0);
  const reset = resetDate(budget.month);
  return (
    `Monthly budget of ${limit} for ${describeBudget(budget)} reached` +
    (reset ? ` (resets ${reset} UTC)` : "") +
    ": the agent's model requests are refused."
  );
}

const SCOPE_ORDER: BudgetScope[] = ["org", "user", "sandbox"];

/**
 * The budgets that hold a session's model requests, org → user → sandbox (the order the
 * gateway reserves in): the org's, its owner's (`user`: `null` when the owner is not
 * known) and the sandbox's own. Each key once; the first answer for a key wins.
 */
export function applicableBudgets(
  budgets: Budget[],
  session: { sandbox: string; user: string | null },
): Budget[] {
  const wanted = (b: Budget) =>
    b.scope === "org" ||
    (b.scope === "user" && session.user !== null && b.name === session.user) ||
    (b.scope === "sandbox" && b.name === session.sandbox);
  const seen = new Set<string>();
  const picked: Budget[] = [];
  for (const b of budgets) {
    const key = `${b.scope}/${b.name}`;
    if (!wanted(b) || seen.has(key)) continue;
    seen.add(key);
    picked.push(b);
  }
  return picked.sort(
    (a, b) =>
      SCOPE_ORDER.indexOf(a.scope as BudgetScope) - SCOPE_ORDER.indexOf(b.scope as BudgetScope),
  );
}
