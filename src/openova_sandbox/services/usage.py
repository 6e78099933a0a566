"""Usage and budgets for callers of the sessions API (the ledger's read side and its
budget settings), with the org rules:

- A caller sees their own usage (records whose token belonged to a sandbox they own,
  by subject); an org admin may ask for the whole org (``scope=org``). Usage never
  crosses the caller's namespace.
- Budgets are set (and reset to the default) by org admins, for their own org, a user
  of it (by email) or one of its sandboxes. Anyone may read the budgets that apply to
  them: the org's, their own and their sandboxes'.
- Session items carry ``usage30d`` and ``spend30d`` from the last 30 days.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import structlog

from ..domain import naming
from ..domain.errors import BackendUnavailable, Forbidden, Invalid, NotFound
from ..domain.ledger import (
    GROUP_BYS,
    SCOPES,
    BudgetKey,
    BudgetState,
    GroupBy,
    Scope,
    UsageQuery,
    UsageTotals,
    as_utc,
    fold_rows,
    month_of,
    usd_number,
    user_key,
)
from ..domain.model import Sandbox, format_time, utcnow
from ..domain.principal import Principal
from .gateway_ledger import Ledger
from .sessions import SessionsService

log = structlog.get_logger(__name__)

REPORT_DAYS = 30  # the default window: today and the 29 days before (UTC)
MAX_REPORT_DAYS = 366
ITEM_WINDOW = timedelta(days=30)
MAX_USER_NAME = 320
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_since(raw: str | None, now: datetime) -> datetime:
    """``since``: a date (``2026-11-01``, midnight UTC) or an RFC 3339 time; default the
    start of the day 29 days ago. Raises ``Invalid`` (``invalid-since``)."""
    today = as_utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if raw is None or not raw.strip():
        return today - timedelta(days=REPORT_DAYS - 1)
    text = raw.strip()
    try:
        if _DATE.match(text):
            since = datetime.fromisoformat(text + "T00:00:00+00:00")
        else:
            since = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise Invalid(
            f'since "{raw}" is not a date (2026-11-01) or an RFC 3339 time (2026-11-01T00:00:00Z)',
            code="invalid-since",
        ) from exc
    if since.tzinfo is None:
        raise Invalid(
            f'since "{raw}" has no time zone: add Z or an offset, or give a date',
            code="invalid-since",
        )
    since = as_utc(since)
    if since > as_utc(now):
        raise Invalid(f'since "{raw}" is in the future', code="invalid-since")
    if since < today - timedelta(days=MAX_REPORT_DAYS - 1):
        raise Invalid(
            f'since "{raw}" is more than {MAX_REPORT_DAYS} days back', code="invalid-since"
        )
    return since


def parse_scope(raw: str | None) -> str:
    scope = (raw or "own").strip()
    if scope not in ("own", "org"):
        raise Invalid(f'scope "{raw}" is not one of: own, org', code="invalid-scope")
    return scope


def parse_group_by(raw: str | None) -> GroupBy | None:
    if raw is None or not raw.strip():
        return None
    if raw.strip() not in GROUP_BYS:
        raise Invalid(
            f'groupBy "{raw}" is not one of: {", ".join(GROUP_BYS)}', code="invalid-group-by"
        )
    return cast(GroupBy, raw.strip())


def parse_budget_scope(raw: str) -> Scope:
    if raw not in SCOPES:
        raise Invalid(
            f'budget scope "{raw}" is not one of: {", ".join(SCOPES)}', code="invalid-scope"
        )
    return raw


def _day_range(since: datetime, until: datetime) -> list[str]:
    day = as_utc(since).date()
    last = as_utc(until).date()
    out = []
    while day <= last:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def _usd(amount: Decimal | None) -> float | None:
    return None if amount is None else usd_number(amount)


def budget_out(state: BudgetState, *, org_label: str) -> dict[str, Any]:
    """A budget on the wire; the org scope is named by the org, like the URL takes it."""
    key = state.key
    out: dict[str, Any] = {
        "scope": key.scope,
        "name": org_label if key.scope == "org" else key.name,
        "monthlyUsd": _usd(state.limit_usd),
        "source": state.source,
        "month": state.month,
        "spentUsd": usd_number(state.spent_usd),
        "reservedUsd": usd_number(state.reserved_usd),
        "remainingUsd": _usd(state.remaining_usd),
    }
    if state.updated_at is not None:
        out["updatedAt"] = format_time(state.updated_at)
        out["updatedBy"] = state.updated_by
    return out


class UsageService:
    def __init__(
        self,
        *,
        ledger: Ledger,
        sessions: SessionsService,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.ledger = ledger
        self._sessions = sessions
        self._clock = clock

    # --- usage ------------------------------------------------------------------------

    async def report(
        self,
        principal: Principal,
        *,
        scope: str | None,
        group_by: str | None,
        since: str | None,
    ) -> dict[str, Any]:
        """``GET /usage``: totals, one bucket per day (every day of the window, zeros
        included) and, with ``groupBy``, one per sandbox / user / model by cost."""
        wanted_scope = parse_scope(scope)
        grouping = parse_group_by(group_by)
        now = self._clock()
        start = parse_since(since, now)
        if wanted_scope == "org" and not principal.is_org_admin:
            raise Forbidden("scope=org is for org admins", code="org-admin-required")
        namespace = self._sessions.namespace_of(principal)
        query = UsageQuery(
            namespace=namespace,
            since=start,
            until=now,
            owner_sub=None if wanted_scope == "org" else principal.sub,
            group_by=grouping,
        )
        report = fold_rows(await self.ledger.usage_rows(query))
        days = dict(report.days)
        return {
            "scope": wanted_scope,
            "org": naming.org_slug(principal.org),
            "groupBy": grouping,
            "since": format_time(start),
            "until": format_time(now),
            "currency": "USD",
            "totals": report.totals.to_dict(),
            "days": [
                {"date": day, **days.get(day, UsageTotals()).to_dict()}
                for day in _day_range(start, now)
            ],
            "groups": [{"key": name, **totals.to_dict()} for name, totals in report.groups],
        }

    async def sandbox_usage(
        self, principal: Principal, sandboxes: Sequence[Sandbox]
    ) -> dict[str, UsageTotals] | None:
        """Each sandbox's last 30 days (zeros for none); ``None`` when the ledger cannot
        be read (the items are then shown without usage rather than not at all)."""
        if not sandboxes:
            return {}
        now = self._clock()
        by_namespace: dict[str, list[str]] = {}
        for sandbox in sandboxes:
            by_namespace.setdefault(sandbox.namespace, []).append(sandbox.name)
        out: dict[tuple[str, str], UsageTotals] = {}
        try:
            for namespace, names in by_namespace.items():
                # the items' shape: the SQL ledger answers it with SQL written once, on
                # SQLite on the event loop (``SqlLedger.item_usage_rows``)
                rows = await self.ledger.usage_rows(
                    UsageQuery(
                        namespace=namespace,
                        since=now - ITEM_WINDOW,
                        until=now,
                        sandboxes=tuple(names),
                        group_by="sandbox",
                        by_day=False,
                    )
                )
                for row in rows:
                    if row.group is not None:
                        slot = (namespace, row.group)
                        out[slot] = out.get(slot, UsageTotals()) + row.totals
        except BackendUnavailable as exc:
            log.warning("usage.unavailable_for_items", error=exc.detail)
            return None
        return {s.name: out.get((s.namespace, s.name), UsageTotals()) for s in sandboxes}

    # --- budgets ----------------------------------------------------------------------

    def _key(self, principal: Principal, scope: str, name: str) -> BudgetKey:
        """The caller's budget key for ``scope``/``name``; the org is theirs only."""
        checked = parse_budget_scope(scope)
        namespace = self._sessions.namespace_of(principal)
        text = name.strip()
        if checked == "org":
            own = {namespace, naming.org_slug(principal.org)}
            if text not in own:
                raise Forbidden(
                    f'budgets are set within your own org ("{naming.org_slug(principal.org)}"), '
                    f'not "{name}"',
                    code="other-org",
                )
            return BudgetKey("org", namespace, namespace)
        if checked == "user":
            if not text or len(text) > MAX_USER_NAME or _CONTROL.search(text):
                raise Invalid(
                    "a user budget is named by the user's email (at most 320 characters)",
                    code="invalid-name",
                )
            return BudgetKey("user", namespace, text.lower())
        if not naming.SESSION_ID_RE.match(text):
            raise Invalid(f'"{name}" is not a sandbox id', code="invalid-name")
        return BudgetKey("sandbox", namespace, text)

    def _require_admin(self, principal: Principal) -> None:
        if not principal.is_org_admin:
            raise Forbidden("budgets are set by org admins", code="org-admin-required")

    async def _may_read(self, principal: Principal, key: BudgetKey) -> None:
        if principal.is_org_admin or key.scope == "org":
            return
        if key.scope == "user" and key.name == user_key(principal.email, principal.sub):
            return
        if key.scope == "sandbox":
            await self._sessions.get(principal, key.name)  # not theirs: not found
            return
        raise Forbidden("org admins read other users' budgets", code="org-admin-required")

    def _org_label(self, principal: Principal) -> str:
        return naming.org_slug(principal.org)

    async def _state(self, principal: Principal, key: BudgetKey) -> dict[str, Any]:
        (state,) = await self.ledger.budgets([key])
        return budget_out(state, org_label=self._org_label(principal))

    async def list_budgets(self, principal: Principal) -> dict[str, Any]:
        namespace = self._sessions.namespace_of(principal)
        org = BudgetKey("org", namespace, namespace)
        keys: list[BudgetKey] = [org]
        if principal.is_org_admin:
            keys += [o.key for o in await self.ledger.budget_overrides(namespace) if o.key != org]
        else:
            keys.append(BudgetKey("user", namespace, user_key(principal.email, principal.sub)))
            keys += [
                BudgetKey("sandbox", namespace, s.name)
                for s in await self._sessions.list(principal)
            ]
        states = await self.ledger.budgets(keys)
        defaults = self.ledger.defaults
        return {
            "month": month_of(self._clock()),
            "currency": "USD",
            "defaults": {scope: _usd(defaults.for_scope(scope)) for scope in SCOPES},
            "budgets": [budget_out(s, org_label=self._org_label(principal)) for s in states],
        }

    async def get_budget(self, principal: Principal, scope: str, name: str) -> dict[str, Any]:
        key = self._key(principal, scope, name)
        await self._may_read(principal, key)
        return await self._state(principal, key)

    def changeable(self, principal: Principal, scope: str, name: str) -> BudgetKey:
        """The key a budget change names, once the caller may change it (checked before
        the body is read: a non-admin learns nothing from a well-formed body)."""
        key = self._key(principal, scope, name)
        self._require_admin(principal)
        return key

    async def set_budget(
        self, principal: Principal, key: BudgetKey, limit_usd: Decimal | None
    ) -> dict[str, Any]:
        self._require_admin(principal)
        if key.scope == "sandbox":
            await self._sandbox_exists(principal, key.name)
        await self.ledger.set_budget(key, limit_usd, by=principal.email or principal.sub)
        log.info(
            "budget.set",
            scope=key.scope,
            name=key.name,
            namespace=key.namespace,
            monthly_usd=None if limit_usd is None else str(limit_usd),
        )
        return await self._state(principal, key)

    async def clear_budget(self, principal: Principal, key: BudgetKey) -> dict[str, Any]:
        self._require_admin(principal)
        if await self.ledger.clear_budget(key):
            log.info("budget.cleared", scope=key.scope, name=key.name, namespace=key.namespace)
        return await self._state(principal, key)

    async def _sandbox_exists(self, principal: Principal, sandbox_id: str) -> None:
        try:
            await self._sessions.get(principal, sandbox_id)
        except NotFound as exc:
            raise NotFound(exc.detail, code="sandbox-not-found") from exc
