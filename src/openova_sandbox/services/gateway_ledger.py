"""The gateway ledger: per-sandbox tokens, budget reservations and the usage record.

``GatewayLedger`` is what the gateway calls on each request (authenticate → reserve the
worst case → forward → settle the real cost); ``Ledger`` adds what the usage and budgets
API and the server's lifecycle need. Two implementations keep the same rules:
``MemoryLedger`` here (tests and ``SANDBOX_STORE=memory``) and ``SqlLedger`` in
``store/sql_ledger.py`` (SQLite and PostgreSQL, atomic across processes and replicas).

Rules both keep:
- ``issue_token`` returns a new random token and stores only its SHA-256; it replaces the
  sandbox's previous token, which stops authenticating. ``revoke`` forgets it.
- ``reserve`` adds the amount to the reserved sum of the org, user and sandbox budgets of
  the current month (UTC) in one step, only when each of them still admits it
  (``domain.ledger.admits``); otherwise nothing is reserved and ``BudgetExceeded`` names
  the first scope (org, user, sandbox) that refused.
- ``settle`` moves the reservation to the real cost (spent += cost, reserved -= amount)
  in the month it was reserved in and writes the usage record, also for a failed or
  free request. Settling twice is a no-op; a reservation that expired (held longer than
  ``reservation_ttl``: its process died, say) was released already, so its settle only
  adds the cost; an unknown id still records the usage and the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import structlog

from ..domain.errors import BackendUnavailable
from ..domain.ledger import (
    APIS,
    GROUP_BYS,
    SCOPES,
    BudgetDefaults,
    BudgetExceeded,
    BudgetKey,
    BudgetOverride,
    BudgetState,
    GatewayIdentity,
    GroupBy,
    Scope,
    UsageQuery,
    UsageRecord,
    UsageReport,
    UsageRow,
    UsageTotals,
    admits,
    as_utc,
    day_of,
    fold_rows,
    from_nanos,
    group_value,
    hash_token,
    matches,
    month_of,
    new_reservation_id,
    new_token,
    resolve_limit,
    to_nanos,
)
from ..domain.model import utcnow

if TYPE_CHECKING:
    from ..config import Settings

log = structlog.get_logger(__name__)

__all__ = [
    "APIS",
    "GROUP_BYS",
    "SCOPES",
    "BudgetDefaults",
    "BudgetExceeded",
    "BudgetKey",
    "BudgetOverride",
    "BudgetState",
    "GatewayIdentity",
    "GatewayLedger",
    "GroupBy",
    "Ledger",
    "LedgerLifecycle",
    "MemoryLedger",
    "Scope",
    "UsageQuery",
    "UsageRecord",
    "UsageReport",
    "UsageRow",
    "UsageTotals",
    "hash_token",
    "make_ledger",
    "new_token",
    "usage_report",
]

RESERVATION_TTL = timedelta(hours=1)
KEEP_CLOSED = timedelta(days=7)  # how long a settled or released id is remembered


@runtime_checkable
class GatewayLedger(Protocol):
    """What the gateway calls on every request."""

    async def issue_token(self, identity: GatewayIdentity) -> str:
        """A new random token for the sandbox (stored hashed); replaces its previous one."""

    async def revoke(self, namespace: str, sandbox: str) -> None:
        """The sandbox's token stops authenticating (idempotent)."""

    async def authenticate(self, token: str) -> GatewayIdentity | None:
        """``None``: unknown or revoked."""

    async def reserve(self, identity: GatewayIdentity, amount_usd: Decimal) -> str:
        """A reservation id; raises ``BudgetExceeded`` (nothing reserved)."""

    async def settle(self, reservation_id: str, record: UsageRecord) -> None:
        """Real cost to spent, reservation released, record written."""


@runtime_checkable
class Ledger(GatewayLedger, Protocol):
    """The whole ledger: the gateway's calls, reports, budgets and a lifecycle."""

    defaults: BudgetDefaults  # the operator's monthly defaults per scope

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def usage_rows(self, query: UsageQuery) -> list[UsageRow]:
        """Sums of the matching records, per (day, group) as the query asks."""

    async def budgets(self, keys: Sequence[BudgetKey]) -> list[BudgetState]:
        """Each key's limit (set, else default), spent and reserved this month."""

    async def budget_overrides(self, namespace: str) -> list[BudgetOverride]:
        """The budgets set through the API in ``namespace``."""

    async def set_budget(self, key: BudgetKey, limit_usd: Decimal | None, *, by: str) -> None:
        """Set (or, with ``None``, lift) the key's monthly budget."""

    async def clear_budget(self, key: BudgetKey) -> bool:
        """Back to the default; whether one was set."""


async def usage_report(ledger: Ledger, query: UsageQuery) -> UsageReport:
    return fold_rows(await ledger.usage_rows(query))


# --- in memory ------------------------------------------------------------------------


@dataclass
class _Reservation:
    month: str
    keys: tuple[BudgetKey, ...]
    amount: int
    created_at: datetime


class MemoryLedger:
    """The reference implementation. Every method runs without awaiting in between its
    check and its write, so on one event loop each is atomic."""

    def __init__(
        self,
        *,
        defaults: BudgetDefaults | None = None,
        clock: Callable[[], datetime] = utcnow,
        reservation_ttl: timedelta = RESERVATION_TTL,
    ) -> None:
        self.defaults = defaults or BudgetDefaults()
        self._clock = clock
        self._ttl = reservation_ttl
        self._tokens: dict[str, GatewayIdentity] = {}  # sha256 → identity
        self._by_sandbox: dict[tuple[str, str], str] = {}  # (namespace, sandbox) → sha256
        self._spend: dict[tuple[str, BudgetKey], list[int]] = {}  # → [spent, reserved]
        self._overrides: dict[BudgetKey, BudgetOverride] = {}
        # open reservations in the order they were made (the oldest first); settled and
        # expired ones move out, and are forgotten after KEEP_CLOSED (as the SQL ledger
        # deletes its rows)
        self._open: dict[str, _Reservation] = {}
        self._settled: dict[str, _Reservation] = {}
        self._released: dict[str, _Reservation] = {}
        self.records: list[UsageRecord] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # --- tokens ---------------------------------------------------------------------

    async def issue_token(self, identity: GatewayIdentity) -> str:
        token = new_token()
        key = (identity.namespace, identity.sandbox)
        previous = self._by_sandbox.pop(key, None)
        if previous is not None:
            self._tokens.pop(previous, None)
        digest = hash_token(token)
        self._tokens[digest] = identity
        self._by_sandbox[key] = digest
        return token

    async def revoke(self, namespace: str, sandbox: str) -> None:
        digest = self._by_sandbox.pop((namespace, sandbox), None)
        if digest is not None:
            self._tokens.pop(digest, None)

    async def authenticate(self, token: str) -> GatewayIdentity | None:
        if not token:
            return None
        return self._tokens.get(hash_token(token))

    # --- budgets --------------------------------------------------------------------

    def _limits(self) -> dict[BudgetKey, int | None]:
        return {
            key: None if o.limit_usd is None else to_nanos(o.limit_usd)
            for key, o in self._overrides.items()
        }

    def _row(self, month: str, key: BudgetKey) -> list[int]:
        return self._spend.setdefault((month, key), [0, 0])

    async def reserve(self, identity: GatewayIdentity, amount_usd: Decimal) -> str:
        now = self._clock()
        self._expire(now)
        month = month_of(now)
        amount = to_nanos(max(amount_usd, Decimal(0)), round_up=True)
        keys = identity.budget_keys()
        limits = self._limits()
        for key in keys:
            spent, reserved = self._spend.get((month, key), (0, 0))
            limit = resolve_limit(key, self.defaults, limits)
            if not admits(spent, reserved, amount, limit):
                assert limit is not None
                raise BudgetExceeded(key, from_nanos(limit), month)
        for key in keys:
            self._row(month, key)[1] += amount
        reservation_id = new_reservation_id()
        self._open[reservation_id] = _Reservation(month, keys, amount, now)
        return reservation_id

    def _expire(self, now: datetime) -> None:
        """Release the open reservations held past the TTL. Only the oldest are looked
        at: the walk stops at the first one still within it."""
        cutoff = as_utc(now - self._ttl)
        while self._open:
            reservation_id, reservation = next(iter(self._open.items()))
            if as_utc(reservation.created_at) >= cutoff:
                break
            del self._open[reservation_id]
            self._released[reservation_id] = reservation
            for key in reservation.keys:
                self._row(reservation.month, key)[1] -= reservation.amount
        forget = as_utc(now - KEEP_CLOSED)
        for closed in (self._settled, self._released):
            while closed:
                reservation_id, closed_one = next(iter(closed.items()))
                if as_utc(closed_one.created_at) >= forget:
                    break
                del closed[reservation_id]

    async def settle(self, reservation_id: str, record: UsageRecord) -> None:
        cost = to_nanos(max(record.cost_usd, Decimal(0)))
        if reservation_id in self._settled:
            return
        keys: tuple[BudgetKey, ...]
        reservation = self._open.pop(reservation_id, None)
        if reservation is not None:
            release = reservation.amount
        else:
            reservation = self._released.pop(reservation_id, None)
            release = 0  # released when it expired (or never known)
        if reservation is None:
            log.warning("ledger.settle_unknown_reservation", sandbox=record.identity.sandbox)
            month, keys = month_of(record.started_at), record.identity.budget_keys()
        else:
            self._settled[reservation_id] = reservation
            month, keys = reservation.month, reservation.keys
        for key in keys:
            row = self._row(month, key)
            row[0] += cost
            row[1] -= release
        self.records.append(record)

    async def budgets(self, keys: Sequence[BudgetKey]) -> list[BudgetState]:
        month = month_of(self._clock())
        limits = self._limits()
        out = []
        for key in keys:
            spent, reserved = self._spend.get((month, key), (0, 0))
            override = self._overrides.get(key)
            limit = resolve_limit(key, self.defaults, limits)
            out.append(
                BudgetState(
                    key=key,
                    limit_usd=None if limit is None else from_nanos(limit),
                    source="set" if override is not None else "default",
                    month=month,
                    spent_usd=from_nanos(spent),
                    reserved_usd=from_nanos(reserved),
                    updated_at=override.updated_at if override else None,
                    updated_by=override.updated_by if override else "",
                )
            )
        return out

    async def budget_overrides(self, namespace: str) -> list[BudgetOverride]:
        found = [o for k, o in self._overrides.items() if k.namespace == namespace]
        return sorted(found, key=lambda o: (SCOPES.index(o.key.scope), o.key.name))

    async def set_budget(self, key: BudgetKey, limit_usd: Decimal | None, *, by: str) -> None:
        self._overrides[key] = BudgetOverride(key, limit_usd, self._clock(), by)

    async def clear_budget(self, key: BudgetKey) -> bool:
        return self._overrides.pop(key, None) is not None

    # --- reports --------------------------------------------------------------------

    async def usage_rows(self, query: UsageQuery) -> list[UsageRow]:
        sums: dict[tuple[str | None, str | None], UsageTotals] = {}
        for record in self.records:
            if not matches(record, query):
                continue
            bucket = (
                day_of(record.started_at) if query.by_day else None,
                group_value(record, query.group_by),
            )
            sums[bucket] = sums.get(bucket, UsageTotals()) + UsageTotals.of(record)
        return [UsageRow(day, group, totals) for (day, group), totals in sums.items()]

    # --- for tests --------------------------------------------------------------------

    def spend_of(self, key: BudgetKey, month: str) -> tuple[Decimal, Decimal]:
        spent, reserved = self._spend.get((month, key), (0, 0))
        return from_nanos(spent), from_nanos(reserved)


def budget_defaults(settings: Settings) -> BudgetDefaults:
    """The operator's monthly defaults (``SANDBOX_BUDGET_{ORG,USER,SANDBOX}_USD``)."""
    return BudgetDefaults(
        org=settings.budget_org_usd,
        user=settings.budget_user_usd,
        sandbox=settings.budget_sandbox_usd,
    )


def make_ledger(settings: Settings) -> Ledger:
    """The ledger for the configured store: in memory for ``memory``, else the SQL
    database of ``SANDBOX_DATABASE_URL`` (in Kubernetes mode, too: the API server keeps
    the Sandboxes, the SQL database the gateway's tokens, usage and budgets)."""
    defaults = budget_defaults(settings)
    if settings.store == "memory":
        return MemoryLedger(defaults=defaults)
    from ..store.sql_ledger import SqlLedger

    if settings.store == "kube" and not settings.database_url:
        # every replica would keep budgets of its own in its data dir
        log.warning(
            "ledger_on_local_sqlite",
            detail="set SANDBOX_DATABASE_URL to a PostgreSQL database shared by every "
            "API and gateway replica, or budgets do not hold across them",
        )
    return SqlLedger(settings.effective_database_url, defaults=defaults)


class LedgerLifecycle:
    """The ledger as one of the server's background parts: opened after the store,
    closed before it. A database that cannot be reached at start does not stop the
    server; the SQL ledger opens itself on its first call (the routes answer 503 until
    then)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def start(self) -> None:
        try:
            await self.ledger.start()
        except BackendUnavailable as exc:
            log.warning("ledger unreachable at start; opening on first use", error=exc.detail)

    async def stop(self) -> None:
        await self.ledger.close()
