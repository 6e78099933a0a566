/**
 * A session's model spend (its item's `usage30d`) and, when a budget that holds its
 * requests is used up, a notice saying so. It polls on its own (every 30 s) and is the
 * only thing that re-renders then: the terminal next to it never does on a timer.
 * Nothing is shown when the item has no `usage30d` (a server without a gateway ledger).
 */
import { useCallback, useEffect, useRef, useState } from "react";
import type { Api, Budget, SandboxItem, Usage30d, WhoAmI } from "../api/client";
import { useApi } from "../api/context";
import { usePolling } from "../hooks";
import { Link } from "../router";
import { applicableBudgets, isReached, reachedMessage, usageLine, userBudgetName } from "../usage";

export const SPEND_POLL_MS = 30_000;

async function orNull<T>(call: Promise<T>): Promise<T | null> {
  try {
    return await call;
  } catch {
    return null;
  }
}

/**
 * The budgets that hold this session, as the API offers them: `GET /budgets` (the org's;
 * for others than org admins also their own and their sessions'), and the session's own
 * and its owner's by name where the list leaves them out (it lists only budgets *set* in
 * the org to an org admin). The owner is known when it is the caller: always for others
 * than org admins (they see only their own sessions), and for an org admin when the
 * session is among their own. The item names no owner, so on another user's session an
 * org admin sees the org's and the session's budgets only.
 */
export async function loadSessionBudgets(
  api: Api,
  sandbox: string,
  who: WhoAmI | null,
): Promise<Budget[]> {
  const listed = (await api.listBudgets()).budgets;
  const found = [...listed];
  const has = (scope: string, name: string) =>
    found.some((b) => b.scope === scope && b.name === name);
  if (!has("sandbox", sandbox)) {
    const own = await orNull(api.getBudget("sandbox", sandbox));
    if (own) found.push(own);
  }
  let user: string | null = null;
  if (who) {
    const me = userBudgetName(who.email, who.sub);
    if (!who.orgAdmin) user = me;
    else if ((await orNull(api.listSessions()))?.some((s) => s.id === sandbox)) user = me;
    if (user !== null && !has("user", user)) {
      const mine = await orNull(api.getBudget("user", user));
      if (mine) found.push(mine);
    }
  }
  return applicableBudgets(found, { sandbox, user });
}

export function SessionSpend({ item, who }: { item: SandboxItem; who?: WhoAmI | null }) {
  const api = useApi();
  const [usage, setUsage] = useState<Usage30d | null | undefined>(item.usage30d);
  const [budgets, setBudgets] = useState<Budget[]>([]);
  const fetched = useRef(false);

  // a newer item from the page's own poll wins over what this component read before
  useEffect(() => setUsage(item.usage30d), [item.usage30d]);

  const metered = usage !== undefined && usage !== null;
  const tick = useCallback(async () => {
    if (fetched.current) {
      const next = await orNull(api.getSession(item.id));
      if (next) setUsage(next.usage30d);
    }
    fetched.current = true;
    const found = await orNull(loadSessionBudgets(api, item.id, who ?? null));
    if (found) setBudgets(found);
  }, [api, item.id, who]);
  usePolling(tick, SPEND_POLL_MS, metered);

  if (!metered) return null;
  const reached = budgets.filter(isReached);
  return (
    <>
      <p className="session-spend" data-testid="session-spend">
        Spend, last 30 days: {usageLine(usage)}
      </p>
      {reached.map((budget) => (
        <p
          key={`${budget.scope}/${budget.name}`}
          className="budget-reached"
          role="alert"
          data-testid="budget-reached"
        >
          {reachedMessage(budget)}{" "}
          <Link href="/sandbox/usage">Usage and budgets</Link>
        </p>
      ))}
    </>
  );
}
