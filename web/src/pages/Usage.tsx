/**
 * `/sandbox/usage`: model spend through the gateway. Org admins see the whole org
 * (`GET /usage?scope=org`), everyone else their own sessions (`scope=own`): a chart of
 * the cost by day (its numbers in a table too), a table by user, model or session, and
 * the monthly budgets that apply, which org admins change here.
 */
import { useCallback, useEffect, useId, useState, type FormEvent } from "react";
import {
  ApiError,
  type Budget,
  type BudgetList,
  type BudgetScope,
  type UsageDay,
  type UsageGroupBy,
  type UsageReport,
  type UsageScope,
  type WhoAmI,
} from "../api/client";
import { useApi } from "../api/context";
import { useTitle } from "../hooks";
import { Link, sessionPath } from "../router";
import {
  chartBars,
  chartSummary,
  describeBudget,
  formatCount,
  formatUsd,
  isReached,
  resetDate,
  share,
  sinceDays,
} from "../usage";

export const PERIODS = [7, 30, 90] as const;

const GROUP_LABELS: Record<UsageGroupBy, string> = {
  user: "User",
  model: "Model",
  sandbox: "Session",
};

const SCOPE_LABELS: Record<BudgetScope, string> = {
  org: "Org",
  user: "User",
  sandbox: "Session",
};

const NAME_LABELS: Record<BudgetScope, string> = {
  org: "Org name",
  user: "User email",
  sandbox: "Session id",
};

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// --- the chart ------------------------------------------------------------------------

const CHART_W = 720;
const CHART_H = 160;

/**
 * Cost by day as bars. The SVG holds the bars only and stretches to its box (so it reads
 * the same on a phone and a desk); the scale's top and the dates are text beside it,
 * for the eye (a screen reader gets the summary and the table of days).
 */
export function DailyChart({ days }: { days: UsageDay[] }) {
  const id = useId();
  const { bars, max } = chartBars(days, CHART_W, CHART_H);
  const first = days[0]?.date ?? "";
  const last = days[days.length - 1]?.date ?? "";
  return (
    <figure className="usage-chart">
      <div className="usage-chart-scale" aria-hidden>
        {formatUsd(max)}
      </div>
      <svg
        viewBox={`0 0 ${CHART_W} ${CHART_H}`}
        preserveAspectRatio="none"
        role="img"
        aria-labelledby={`${id}-title`}
        aria-describedby={`${id}-desc`}
        data-testid="usage-chart"
      >
        <title id={`${id}-title`}>Model spend by day</title>
        <desc id={`${id}-desc`}>{chartSummary(days)}</desc>
        <line className="usage-axis" x1={0} x2={CHART_W} y1={0.5} y2={0.5} vectorEffect="non-scaling-stroke" />
        {bars.map((bar) => (
          <rect
            key={bar.day.date}
            className="usage-bar"
            data-date={bar.day.date}
            x={bar.x}
            y={bar.y}
            width={bar.width}
            height={bar.height}
          >
            <title>
              {bar.day.date}: {formatUsd(bar.day.costUsd)}, {formatCount(bar.day.requests)} requests
            </title>
          </rect>
        ))}
        <line
          className="usage-axis usage-baseline"
          x1={0}
          x2={CHART_W}
          y1={CHART_H - 0.5}
          y2={CHART_H - 0.5}
          vectorEffect="non-scaling-stroke"
        />
      </svg>
      <div className="usage-chart-dates" aria-hidden>
        <span>{first}</span>
        <span>{last}</span>
      </div>
    </figure>
  );
}

function DaysTable({ days }: { days: UsageDay[] }) {
  return (
    <details className="usage-days">
      <summary>Spend by day as a table</summary>
      <div className="table-scroll">
        <table className="data-table">
          <caption className="visually-hidden">Model spend by day</caption>
          <thead>
            <tr>
              <th scope="col">Day (UTC)</th>
              <th scope="col" className="num">
                Requests
              </th>
              <th scope="col" className="num">
                Input tokens
              </th>
              <th scope="col" className="num">
                Output tokens
              </th>
              <th scope="col" className="num">
                Cost
              </th>
            </tr>
          </thead>
          <tbody>
            {[...days].reverse().map((day) => (
              <tr key={day.date}>
                <th scope="row">{day.date}</th>
                <td className="num">{formatCount(day.requests)}</td>
                <td className="num">{formatCount(day.inputTokens)}</td>
                <td className="num">{formatCount(day.outputTokens)}</td>
                <td className="num">{formatUsd(day.costUsd)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </details>
  );
}

// --- totals and groups ----------------------------------------------------------------

function Totals({ report }: { report: UsageReport }) {
  const t = report.totals;
  const items: [string, string][] = [
    ["Cost", formatUsd(t.costUsd)],
    ["Requests", formatCount(t.requests)],
    ["Input tokens", formatCount(t.inputTokens)],
    ["Output tokens", formatCount(t.outputTokens)],
  ];
  if (t.cacheReadTokens) items.push(["Cache read tokens", formatCount(t.cacheReadTokens)]);
  if (t.cacheWriteTokens) items.push(["Cache write tokens", formatCount(t.cacheWriteTokens)]);
  return (
    <dl className="usage-totals" data-testid="usage-totals">
      {items.map(([label, value]) => (
        <div key={label} className="usage-total">
          <dt>{label}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

function GroupTable({ report, groupBy }: { report: UsageReport; groupBy: UsageGroupBy }) {
  const label = GROUP_LABELS[groupBy];
  if (report.groups.length === 0) {
    return <p className="empty">No model requests in this period.</p>;
  }
  return (
    <div className="table-scroll">
      <table className="data-table" data-testid="usage-groups">
        <caption className="visually-hidden">Model spend by {label.toLowerCase()}</caption>
        <thead>
          <tr>
            <th scope="col">{label}</th>
            <th scope="col" className="num">
              Requests
            </th>
            <th scope="col" className="num">
              Input tokens
            </th>
            <th scope="col" className="num">
              Output tokens
            </th>
            <th scope="col" className="num">
              Cost
            </th>
            <th scope="col" className="num">
              Share
            </th>
          </tr>
        </thead>
        <tbody>
          {report.groups.map((group) => (
            <tr key={group.key}>
              <th scope="row">
                {groupBy === "sandbox" ? (
                  <Link href={sessionPath(group.key)}>{group.key}</Link>
                ) : (
                  group.key
                )}
              </th>
              <td className="num">{formatCount(group.requests)}</td>
              <td className="num">{formatCount(group.inputTokens)}</td>
              <td className="num">{formatCount(group.outputTokens)}</td>
              <td className="num">{formatUsd(group.costUsd)}</td>
              <td className="num">{share(group.costUsd, report.totals.costUsd)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Choice<T extends string>({
  legend,
  name,
  options,
  value,
  onChange,
}: {
  legend: string;
  name: string;
  options: [T, string][];
  value: T;
  onChange: (value: T) => void;
}) {
  return (
    <fieldset className="segmented">
      <legend>{legend}</legend>
      {options.map(([option, label]) => (
        <label key={option} className={option === value ? "segment segment-on" : "segment"}>
          <input
            type="radio"
            name={name}
            value={option}
            checked={option === value}
            onChange={() => onChange(option)}
          />
          {label}
        </label>
      ))}
    </fieldset>
  );
}

// --- budgets --------------------------------------------------------------------------

function usd(amount: number | null): string {
  return amount === null ? "no cap" : formatUsd(amount);
}

function sourceText(budget: Budget): string {
  if (budget.source !== "set") return "operator default";
  const when = budget.updatedAt ? budget.updatedAt.slice(0, 10) : "";
  return ["set", budget.updatedBy ? `by ${budget.updatedBy}` : "", when ? `on ${when}` : ""]
    .filter(Boolean)
    .join(" ");
}

interface BudgetForm {
  scope: BudgetScope;
  name: string;
  amount: string;
  noCap: boolean;
}

export function BudgetsPanel({ admin, org }: { admin: boolean; org: string }) {
  const api = useApi();
  const formId = useId();
  const [list, setList] = useState<BudgetList | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const orgName = list?.budgets.find((b) => b.scope === "org")?.name || org;
  const [form, setForm] = useState<BudgetForm>({ scope: "user", name: "", amount: "", noCap: false });

  const load = useCallback(async () => {
    try {
      setList(await api.listBudgets());
      setLoadError(null);
    } catch (err) {
      setLoadError(message(err));
    }
  }, [api]);
  useEffect(() => {
    void load();
  }, [load]);

  const edit = (budget: Budget) => {
    setActionError(null);
    setDone(null);
    setForm({
      scope: budget.scope as BudgetScope,
      name: budget.name,
      amount: budget.monthlyUsd === null ? "" : String(budget.monthlyUsd),
      noCap: budget.monthlyUsd === null,
    });
    window.setTimeout(() => document.getElementById(`${formId}-amount`)?.focus(), 0);
  };

  const changed = async (action: () => Promise<Budget>, what: (b: Budget) => string) => {
    setBusy(true);
    setActionError(null);
    setDone(null);
    try {
      const budget = await action();
      setDone(what(budget));
      await load();
      return true;
    } catch (err) {
      setActionError(message(err));
      return false;
    } finally {
      setBusy(false);
    }
  };

  const submit = async (ev: FormEvent) => {
    ev.preventDefault();
    const name = form.name.trim();
    const amount = form.amount.trim();
    setDone(null);
    if (!name) {
      setActionError(`Enter the ${NAME_LABELS[form.scope].toLowerCase()}.`);
      return;
    }
    if (!form.noCap && !amount) {
      // an empty amount would read as "no cap" on the server: say which one is meant
      setActionError("Enter a monthly amount in USD, or choose No cap.");
      return;
    }
    await changed(
      () => api.setBudget(form.scope, name, form.noCap ? null : amount),
      (b) => `Monthly budget of ${describeBudget(b)} is now ${usd(b.monthlyUsd)}.`,
    );
  };

  const reset = (budget: Budget) =>
    changed(
      () => api.resetBudget(budget.scope as BudgetScope, budget.name),
      (b) => `Budget of ${describeBudget(b)} is back to the default (${usd(b.monthlyUsd)}).`,
    );

  const setScope = (scope: BudgetScope) =>
    setForm((old) => ({
      ...old,
      scope,
      name: scope === "org" ? orgName : old.scope === "org" ? "" : old.name,
    }));

  const month = list?.month ?? "";
  return (
    <section className="card usage-budgets" aria-labelledby="budgets-title">
      <h2 id="budgets-title">Monthly budgets</h2>
      <p className="hint">
        A budget caps what the gateway forwards in a calendar month (UTC): once a budget that
        applies is used up, the agent's model requests are refused until it resets
        {month && ` on ${resetDate(month)}`}. Every request is held against the org's, its
        owner's and its session's budget.
      </p>
      {loadError && (
        <p className="form-error" role="alert">
          Could not load the budgets: {loadError}
        </p>
      )}
      {list && (
        <>
          <div className="table-scroll">
            <table className="data-table" data-testid="budgets-table">
              <caption className="visually-hidden">Budgets for {month} (UTC)</caption>
              <thead>
                <tr>
                  <th scope="col">Budget</th>
                  <th scope="col" className="num">
                    Monthly
                  </th>
                  <th scope="col" className="num">
                    Spent in {month}
                  </th>
                  <th scope="col" className="num">
                    Remaining
                  </th>
                  <th scope="col">Source</th>
                  {admin && <th scope="col">Change</th>}
                </tr>
              </thead>
              <tbody>
                {list.budgets.map((budget) => {
                  const label = describeBudget(budget);
                  return (
                    <tr key={`${budget.scope}/${budget.name}`} data-testid={`budget-${budget.scope}-${budget.name}`}>
                      <th scope="row">
                        <span className="budget-scope">{SCOPE_LABELS[budget.scope as BudgetScope] ?? budget.scope}</span>{" "}
                        {budget.name}{" "}
                        {isReached(budget) && <span className="pill pill-red">Reached</span>}
                      </th>
                      <td className="num">{usd(budget.monthlyUsd)}</td>
                      <td className="num">
                        {formatUsd(budget.spentUsd)}
                        {budget.reservedUsd > 0 && (
                          <span className="hint"> (+{formatUsd(budget.reservedUsd)} in flight)</span>
                        )}
                      </td>
                      <td className="num">{budget.remainingUsd === null ? "–" : formatUsd(budget.remainingUsd)}</td>
                      <td>{sourceText(budget)}</td>
                      {admin && (
                        <td className="row-actions">
                          <button
                            type="button"
                            className="btn btn-small"
                            aria-label={`Edit budget of ${label}`}
                            onClick={() => edit(budget)}
                          >
                            Edit
                          </button>
                          {budget.source === "set" && (
                            <button
                              type="button"
                              className="btn btn-small"
                              aria-label={`Reset budget of ${label} to the default`}
                              disabled={busy}
                              onClick={() => void reset(budget)}
                            >
                              Reset
                            </button>
                          )}
                        </td>
                      )}
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
          <p className="hint" data-testid="budget-defaults">
            Operator defaults per month: org {usd(list.defaults.org)} · user{" "}
            {usd(list.defaults.user)} · session {usd(list.defaults.sandbox)}.
          </p>
        </>
      )}
      {admin ? (
        <form className="form budget-form" onSubmit={(ev) => void submit(ev)} aria-labelledby={`${formId}-title`}>
          <h3 id={`${formId}-title`}>Set a budget</h3>
          <div className="budget-form-row">
            <div className="field">
              <label htmlFor={`${formId}-scope`}>Scope</label>
              <select
                id={`${formId}-scope`}
                value={form.scope}
                onChange={(ev) => setScope(ev.target.value as BudgetScope)}
              >
                <option value="org">Org</option>
                <option value="user">User</option>
                <option value="sandbox">Session</option>
              </select>
            </div>
            <div className="field">
              <label htmlFor={`${formId}-name`}>{NAME_LABELS[form.scope]}</label>
              <input
                id={`${formId}-name`}
                type="text"
                value={form.name}
                autoComplete="off"
                spellCheck={false}
                onChange={(ev) => setForm({ ...form, name: ev.target.value })}
              />
            </div>
            <div className="field">
              <label htmlFor={`${formId}-amount`}>Monthly budget (USD)</label>
              <input
                id={`${formId}-amount`}
                type="text"
                inputMode="decimal"
                value={form.noCap ? "" : form.amount}
                disabled={form.noCap}
                placeholder={form.noCap ? "no cap" : "e.g. 50"}
                onChange={(ev) => setForm({ ...form, amount: ev.target.value })}
              />
            </div>
            <div className="field field-check">
              <input
                id={`${formId}-nocap`}
                type="checkbox"
                checked={form.noCap}
                onChange={(ev) => setForm({ ...form, noCap: ev.target.checked })}
              />
              <label htmlFor={`${formId}-nocap`}>No cap</label>
            </div>
            <button type="submit" className="btn btn-primary" disabled={busy}>
              {busy ? "Saving…" : "Save budget"}
            </button>
          </div>
          <p className="hint">
            A budget set here replaces the operator's default for that one org, user or
            session; Reset returns it to the default.
          </p>
        </form>
      ) : (
        <p className="hint">Org admins set budgets.</p>
      )}
      {actionError && (
        <p className="form-error" role="alert" data-testid="budget-error">
          {actionError}
        </p>
      )}
      <p className="budget-done" role="status">
        {done ?? ""}
      </p>
    </section>
  );
}

// --- the page -------------------------------------------------------------------------

export function UsagePage({ who }: { who: WhoAmI | null }) {
  const api = useApi();
  const admin = who?.orgAdmin === true;
  const [scope, setScope] = useState<UsageScope>(admin ? "org" : "own");
  const [groupBy, setGroupBy] = useState<UsageGroupBy>(admin ? "user" : "sandbox");
  const [days, setDays] = useState<number>(30);
  const [report, setReport] = useState<UsageReport | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  useTitle("Usage");

  useEffect(() => {
    let live = true;
    setLoading(true);
    api.usage({ scope, groupBy, since: sinceDays(days) }).then(
      (next) => {
        if (!live) return;
        setReport(next);
        setError(null);
        setLoading(false);
      },
      (err: unknown) => {
        if (!live) return;
        setError(err instanceof ApiError ? err.message : message(err));
        setLoading(false);
      },
    );
    return () => {
      live = false;
    };
  }, [api, scope, groupBy, days]);

  const org = report?.org || who?.org || "";
  // while another grouping loads, the table keeps saying what it shows
  const shownGroup = (report?.groupBy ?? groupBy) as UsageGroupBy;
  const title = scope === "org" ? `Model usage of ${org || "the org"}` : "Your model usage";
  return (
    <div className="page usage-page">
      <h1 className="page-title">{title}</h1>
      <p className="lead">
        What the sessions' agents spent on models through the gateway
        {scope === "org" ? ", for every user of the org" : ", in your own sessions"}.
        Days are UTC.
      </p>
      <div className="usage-controls">
        {admin && (
          <Choice<UsageScope>
            legend="Whose"
            name="usage-scope"
            options={[
              ["org", "Whole org"],
              ["own", "My sessions"],
            ]}
            value={scope}
            onChange={setScope}
          />
        )}
        <Choice<UsageGroupBy>
          legend="Break down by"
          name="usage-group"
          options={(["user", "model", "sandbox"] as const).map((g) => [g, GROUP_LABELS[g]])}
          value={groupBy}
          onChange={setGroupBy}
        />
        <div className="field">
          <label htmlFor="usage-period">Period</label>
          <select id="usage-period" value={days} onChange={(ev) => setDays(Number(ev.target.value))}>
            {PERIODS.map((n) => (
              <option key={n} value={n}>
                Last {n} days
              </option>
            ))}
          </select>
        </div>
      </div>
      {error && (
        <p className="form-error" role="alert">
          Could not load the usage: {error}
        </p>
      )}
      {report === null && !error && <p className="muted">Loading usage…</p>}
      {report && (
        <section className="card usage-report" aria-busy={loading} aria-labelledby="usage-period-title">
          <h2 id="usage-period-title">
            {report.since.slice(0, 10)} to {report.until.slice(0, 10)}
          </h2>
          <Totals report={report} />
          <DailyChart days={report.days} />
          <DaysTable days={report.days} />
          <h3 className="usage-groups-title">By {GROUP_LABELS[shownGroup].toLowerCase()}</h3>
          <GroupTable report={report} groupBy={shownGroup} />
        </section>
      )}
      <BudgetsPanel admin={admin} org={org} />
    </div>
  );
}

export default UsagePage;
