"""The gateway ledger on SQL (SQLite or PostgreSQL): the rules of
``services.gateway_ledger``, atomic across every process sharing the database.

A reservation is, for the org, user and sandbox budget of the month in turn (always in
that order, so two transactions never wait on each other's rows crosswise)::

    INSERT INTO gateway_spend ... ON CONFLICT DO NOTHING      -- the month's row exists
    UPDATE gateway_spend SET reserved = reserved + :x
     WHERE <key> AND spent + reserved + :x <= :limit AND spent + reserved < :limit

in one transaction; an update that matches no row means the budget refuses, and the
transaction rolls back (nothing is reserved anywhere). On PostgreSQL the row lock makes
a concurrent reservation wait and re-check the condition on the committed row; on
SQLite write transactions begin ``IMMEDIATE`` and run one at a time. ``settle`` claims
its reservation row (``settled_at IS NULL``), so a retried or repeated settle changes
nothing. Reservations never settled within ``reservation_ttl`` are released by a sweep
that runs at most once a minute per process, on the way into ``reserve``; settled ones
are deleted a week later.

Calls run under the store's rule (``sql_retry``): a time budget, one retry on fresh
connections for a transient failure, ``BackendUnavailable`` for the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

import structlog
from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..domain.errors import BackendUnavailable
from ..domain.ledger import (
    SCOPES,
    BudgetDefaults,
    BudgetExceeded,
    BudgetKey,
    BudgetOverride,
    BudgetState,
    GatewayIdentity,
    Scope,
    UsageQuery,
    UsageRecord,
    UsageRow,
    UsageTotals,
    as_utc,
    day_of,
    from_nanos,
    hash_token,
    month_of,
    new_reservation_id,
    new_token,
    resolve_limit,
    to_nanos,
    user_key,
)
from ..domain.model import utcnow
from .sql_engine import create_engine, migrate, migration_lock, parse_url, safe_url
from .sql_ledger_schema import budgets, reservations, spend, tokens, usage
from .sql_retry import UNAVAILABLE, run_with_retry

log = structlog.get_logger(__name__)

T = TypeVar("T")
RESERVATION_TTL = timedelta(hours=1)
SWEEP_EVERY_SECONDS = 60.0
KEEP_SETTLED = timedelta(days=7)
_RANK = {scope: i for i, scope in enumerate(SCOPES)}


def _key_of(row: Any) -> BudgetKey:
    return BudgetKey(cast(Scope, row.scope), row.namespace, row.name)


def _is_key(table: Any, key: BudgetKey) -> ColumnElement[bool]:
    return and_(
        table.c.scope == key.scope, table.c.namespace == key.namespace, table.c.name == key.name
    )


def _reservation_keys(namespace: str, user: str, sandbox: str) -> tuple[BudgetKey, ...]:
    return (
        BudgetKey("org", namespace, namespace),
        BudgetKey("user", namespace, user),
        BudgetKey("sandbox", namespace, sandbox),
    )


class SqlLedger:
    def __init__(
        self,
        url: str,
        *,
        defaults: BudgetDefaults | None = None,
        clock: Callable[[], datetime] = utcnow,
        reservation_ttl: timedelta = RESERVATION_TTL,
        call_timeout: float = 5.0,
        echo: bool = False,
    ) -> None:
        self._url = parse_url(url)
        self.defaults = defaults or BudgetDefaults()
        self._clock = clock
        self._ttl = reservation_ttl
        self._budget = call_timeout
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._start_lock = asyncio.Lock()
        # SQLite takes one writer at a time anyway: queue them here rather than in its
        # busy timeout. PostgreSQL writers run concurrently (row locks order them).
        self._sqlite = self._url.get_backend_name() == "sqlite"
        self._write_lock = asyncio.Lock()
        self._next_sweep = 0.0
        self._closed = False

    @property
    def url(self) -> str:
        return safe_url(self._url)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._engine is not None:
                return
            self._closed = False
            engine = create_engine(self._url, echo=self._echo, connect_timeout=self._budget)
            try:
                await self._attempts("ledger.migrate", engine, self._migrate)
            except BaseException:
                await engine.dispose()
                raise
            self._engine = engine
            log.info("ledger.started", backend=self._url.get_backend_name(), url=self.url)

    async def close(self) -> None:
        self._closed = True
        async with self._start_lock:
            engine, self._engine = self._engine, None
            if engine is not None:
                await engine.dispose()

    # --- tokens -----------------------------------------------------------------------

    async def issue_token(self, identity: GatewayIdentity) -> str:
        token = new_token()
        digest = hash_token(token)

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                delete(tokens).where(
                    tokens.c.namespace == identity.namespace, tokens.c.sandbox == identity.sandbox
                )
            )
            await connection.execute(
                insert(tokens).values(
                    namespace=identity.namespace,
                    sandbox=identity.sandbox,
                    token_sha256=digest,
                    owner_sub=identity.owner_sub,
                    owner_email=identity.owner_email,
                    org=identity.org,
                    issued_at=as_utc(self._clock()),
                )
            )

        await self._write("ledger.issue_token", work)
        return token

    async def revoke(self, namespace: str, sandbox: str) -> None:
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                delete(tokens).where(tokens.c.namespace == namespace, tokens.c.sandbox == sandbox)
            )

        await self._write("ledger.revoke", work)

    async def authenticate(self, token: str) -> GatewayIdentity | None:
        if not token:
            return None
        digest = hash_token(token)

        async def work(engine: AsyncEngine) -> GatewayIdentity | None:
            async with engine.connect() as connection:
                row = (
                    await connection.execute(select(tokens).where(tokens.c.token_sha256 == digest))
                ).one_or_none()
            if row is None:
                return None
            return GatewayIdentity(
                sandbox=row.sandbox,
                namespace=row.namespace,
                owner_sub=row.owner_sub,
                owner_email=row.owner_email,
                org=row.org,
            )

        return await self._call("ledger.authenticate", work)

    # --- reservations -----------------------------------------------------------------

    async def reserve(self, identity: GatewayIdentity, amount_usd: Decimal) -> str:
        now = as_utc(self._clock())
        await self._maybe_sweep(now)
        month = month_of(now)
        amount = to_nanos(max(amount_usd, Decimal(0)), round_up=True)
        keys = identity.budget_keys()
        reservation_id = new_reservation_id()

        async def work(connection: AsyncConnection) -> None:
            limits = await self._overrides(connection, keys)
            for key in keys:
                limit = resolve_limit(key, self.defaults, limits)
                await self._ensure_row(connection, month, key)
                statement = (
                    update(spend)
                    .where(spend.c.month == month, _is_key(spend, key))
                    .values(reserved_nanos=spend.c.reserved_nanos + amount)
                )
                if limit is not None:
                    used = spend.c.spent_nanos + spend.c.reserved_nanos
                    statement = statement.where(used + amount <= limit, used < limit)
                if (await connection.execute(statement)).rowcount != 1:
                    assert limit is not None
                    raise BudgetExceeded(key, from_nanos(limit), month)
            await connection.execute(
                insert(reservations).values(
                    id=reservation_id,
                    month=month,
                    namespace=identity.namespace,
                    user_name=identity.user,
                    sandbox=identity.sandbox,
                    amount_nanos=amount,
                    created_at=now,
                    settled_at=None,
                    released=False,
                )
            )

        await self._write("ledger.reserve", work)
        return reservation_id

    async def settle(self, reservation_id: str, record: UsageRecord) -> None:
        now = as_utc(self._clock())
        cost = to_nanos(max(record.cost_usd, Decimal(0)))

        async def work(connection: AsyncConnection) -> None:
            claimed = (
                await connection.execute(
                    update(reservations)
                    .where(reservations.c.id == reservation_id, reservations.c.settled_at.is_(None))
                    .values(settled_at=now)
                    .returning(
                        reservations.c.month,
                        reservations.c.namespace,
                        reservations.c.user_name,
                        reservations.c.sandbox,
                        reservations.c.amount_nanos,
                        reservations.c.released,
                    )
                )
            ).one_or_none()
            keys: tuple[BudgetKey, ...]
            if claimed is None:
                known = (
                    await connection.execute(
                        select(reservations.c.id).where(reservations.c.id == reservation_id)
                    )
                ).one_or_none()
                if known is not None:
                    return  # settled before: nothing more to do
                log.warning("ledger.settle_unknown_reservation", sandbox=record.identity.sandbox)
                month, keys, release = month_of(record.started_at), record.identity.budget_keys(), 0
            else:
                month = claimed.month
                keys = _reservation_keys(claimed.namespace, claimed.user_name, claimed.sandbox)
                release = 0 if claimed.released else int(claimed.amount_nanos)
            for key in keys:
                await self._ensure_row(connection, month, key)
                await connection.execute(
                    update(spend)
                    .where(spend.c.month == month, _is_key(spend, key))
                    .values(
                        spent_nanos=spend.c.spent_nanos + cost,
                        reserved_nanos=spend.c.reserved_nanos - release,
                    )
                )
            await connection.execute(insert(usage).values(**_usage_row(record, cost)))

        await self._write("ledger.settle", work)

    async def _maybe_sweep(self, now: datetime) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
        try:
            await self.sweep(now)
        except BackendUnavailable:
            self._next_sweep = 0.0  # try again on the next reservation
            raise

    async def sweep(self, now: datetime | None = None) -> int:
        """Release the reservations held past the TTL; drop week-old settled ones.
        Returns how many were released."""
        now = as_utc(now or self._clock())
        cutoff = now - self._ttl

        async def work(connection: AsyncConnection) -> int:
            expired = (
                await connection.execute(
                    update(reservations)
                    .where(
                        reservations.c.settled_at.is_(None),
                        reservations.c.released.is_(False),
                        reservations.c.created_at < cutoff,
                    )
                    .values(released=True)
                    .returning(
                        reservations.c.month,
                        reservations.c.namespace,
                        reservations.c.user_name,
                        reservations.c.sandbox,
                        reservations.c.amount_nanos,
                    )
                )
            ).all()
            release: dict[tuple[str, BudgetKey], int] = {}
            for row in expired:
                for key in _reservation_keys(row.namespace, row.user_name, row.sandbox):
                    slot = (row.month, key)
                    release[slot] = release.get(slot, 0) + int(row.amount_nanos)
            # one global order (month, namespace, org < user < sandbox, name): the
            # order reservations take their rows in, so a sweep never deadlocks them
            order = sorted(
                release, key=lambda s: (s[0], s[1].namespace, _RANK[s[1].scope], s[1].name)
            )
            for month, key in order:
                await connection.execute(
                    update(spend)
                    .where(spend.c.month == month, _is_key(spend, key))
                    .values(reserved_nanos=spend.c.reserved_nanos - release[(month, key)])
                )
            await connection.execute(
                delete(reservations).where(
                    reservations.c.created_at < now - KEEP_SETTLED,
                    or_(reservations.c.settled_at.is_not(None), reservations.c.released.is_(True)),
                )
            )
            if expired:
                log.warning("ledger.reservations_expired", count=len(expired))
            return len(expired)

        return await self._write("ledger.sweep", work)

    # --- budgets ----------------------------------------------------------------------

    async def budgets(self, keys: Sequence[BudgetKey]) -> list[BudgetState]:
        month = month_of(self._clock())
        wanted = list(keys)

        async def work(engine: AsyncEngine) -> list[BudgetState]:
            if not wanted:
                return []
            async with engine.connect() as connection:
                rows = (
                    await connection.execute(
                        select(spend).where(
                            spend.c.month == month, or_(*(_is_key(spend, k) for k in wanted))
                        )
                    )
                ).all()
                set_rows = (
                    await connection.execute(
                        select(budgets).where(or_(*(_is_key(budgets, k) for k in wanted)))
                    )
                ).all()
            sums = {_key_of(r): (int(r.spent_nanos), int(r.reserved_nanos)) for r in rows}
            overrides = {_key_of(r): r for r in set_rows}
            limits = {
                k: (None if r.limit_nanos is None else int(r.limit_nanos))
                for k, r in overrides.items()
            }
            out = []
            for key in wanted:
                spent, reserved = sums.get(key, (0, 0))
                limit = resolve_limit(key, self.defaults, limits)
                override = overrides.get(key)
                out.append(
                    BudgetState(
                        key=key,
                        limit_usd=None if limit is None else from_nanos(limit),
                        source="set" if override is not None else "default",
                        month=month,
                        spent_usd=from_nanos(spent),
                        reserved_usd=from_nanos(reserved),
                        updated_at=as_utc(override.updated_at) if override is not None else None,
                        updated_by=override.updated_by if override is not None else "",
                    )
                )
            return out

        return await self._call("ledger.budgets", work)

    async def budget_overrides(self, namespace: str) -> list[BudgetOverride]:
        async def work(engine: AsyncEngine) -> list[BudgetOverride]:
            async with engine.connect() as connection:
                rows = (
                    await connection.execute(
                        select(budgets).where(budgets.c.namespace == namespace)
                    )
                ).all()
            found = [
                BudgetOverride(
                    key=_key_of(r),
                    limit_usd=None if r.limit_nanos is None else from_nanos(int(r.limit_nanos)),
                    updated_at=as_utc(r.updated_at),
                    updated_by=r.updated_by,
                )
                for r in rows
            ]
            return sorted(found, key=lambda o: (_RANK[o.key.scope], o.key.name))

        return await self._call("ledger.budget_overrides", work)

    async def set_budget(self, key: BudgetKey, limit_usd: Decimal | None, *, by: str) -> None:
        values = {
            "limit_nanos": None if limit_usd is None else to_nanos(limit_usd),
            "updated_at": as_utc(self._clock()),
            "updated_by": by,
        }

        async def work(connection: AsyncConnection) -> None:
            statement = self._insert(budgets).values(
                scope=key.scope, namespace=key.namespace, name=key.name, **values
            )
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[budgets.c.scope, budgets.c.namespace, budgets.c.name],
                    set_=values,
                )
            )

        await self._write("ledger.set_budget", work)

    async def clear_budget(self, key: BudgetKey) -> bool:
        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(delete(budgets).where(_is_key(budgets, key)))
            return bool(result.rowcount)

        return await self._write("ledger.clear_budget", work)

    # --- reports ----------------------------------------------------------------------

    async def usage_rows(self, query: UsageQuery) -> list[UsageRow]:
        group = {
            None: None,
            "sandbox": usage.c.sandbox,
            "user": usage.c.user_name,
            "model": usage.c.model,
        }[query.group_by]
        keys: list[Any] = []
        if query.by_day:
            keys.append(usage.c.day)
        if group is not None:
            keys.append(group)
        sums = [
            func.count().label("requests"),
            func.sum(usage.c.input_tokens).label("input_tokens"),
            func.sum(usage.c.output_tokens).label("output_tokens"),
            func.sum(usage.c.cache_read_tokens).label("cache_read_tokens"),
            func.sum(usage.c.cache_write_tokens).label("cache_write_tokens"),
            func.sum(usage.c.cost_nanos).label("cost_nanos"),
        ]
        statement = select(*keys, *sums).where(
            usage.c.namespace == query.namespace, usage.c.started_at >= as_utc(query.since)
        )
        if query.until is not None:
            statement = statement.where(usage.c.started_at < as_utc(query.until))
        if query.owner_sub is not None:
            statement = statement.where(usage.c.owner_sub == query.owner_sub)
        if query.sandboxes is not None:
            if not query.sandboxes:
                return []
            statement = statement.where(usage.c.sandbox.in_(query.sandboxes))
        if keys:
            statement = statement.group_by(*keys)

        async def work(engine: AsyncEngine) -> list[UsageRow]:
            async with engine.connect() as connection:
                rows = (await connection.execute(statement)).all()
            out = []
            for row in rows:
                if not row.requests:
                    continue  # no grouping and nothing matched: one row of NULL sums
                values = row._mapping
                out.append(
                    UsageRow(
                        day=values["day"] if query.by_day else None,
                        group=values[group.key] if group is not None else None,
                        totals=UsageTotals(
                            requests=int(row.requests),
                            input_tokens=int(row.input_tokens or 0),
                            output_tokens=int(row.output_tokens or 0),
                            cache_read_tokens=int(row.cache_read_tokens or 0),
                            cache_write_tokens=int(row.cache_write_tokens or 0),
                            cost_nanos=int(row.cost_nanos or 0),
                        ),
                    )
                )
            return out

        return await self._call("ledger.usage", work)

    # --- internals --------------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        return (sqlite_insert if self._sqlite else pg_insert)(table)

    async def _ensure_row(self, connection: AsyncConnection, month: str, key: BudgetKey) -> None:
        await connection.execute(
            self._insert(spend)
            .values(
                month=month,
                scope=key.scope,
                namespace=key.namespace,
                name=key.name,
                spent_nanos=0,
                reserved_nanos=0,
            )
            .on_conflict_do_nothing(
                index_elements=[spend.c.month, spend.c.scope, spend.c.namespace, spend.c.name]
            )
        )

    async def _overrides(
        self, connection: AsyncConnection, keys: Sequence[BudgetKey]
    ) -> dict[BudgetKey, int | None]:
        rows = await connection.execute(
            select(
                budgets.c.scope, budgets.c.namespace, budgets.c.name, budgets.c.limit_nanos
            ).where(or_(*(_is_key(budgets, k) for k in keys)))
        )
        return {_key_of(r): (None if r.limit_nanos is None else int(r.limit_nanos)) for r in rows}

    async def _migrate(self, engine: AsyncEngine) -> None:
        async with migration_lock(), engine.connect() as connection:
            connection = await connection.execution_options(sqlite_begin="immediate")
            await connection.run_sync(migrate)
            await connection.commit()

    async def _write(self, action: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """One write transaction; committed when ``work`` returns, rolled back when it
        raises (``BudgetExceeded`` included)."""

        async def run(engine: AsyncEngine) -> T:
            async with engine.connect() as connection:
                connection = await connection.execution_options(sqlite_begin="immediate")
                value = await work(connection)
                await connection.commit()
                return value

        async def serialised(engine: AsyncEngine) -> T:
            if not self._sqlite:
                return await run(engine)
            async with self._write_lock:
                return await run(engine)

        return await self._call(action, serialised)

    async def _ready(self) -> AsyncEngine:
        if self._closed:
            raise BackendUnavailable(UNAVAILABLE)
        if self._engine is None:
            await self.start()
        engine = self._engine
        if engine is None:
            raise BackendUnavailable(UNAVAILABLE)
        return engine

    async def _call(self, action: str, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
        return await self._attempts(action, await self._ready(), work)

    async def _attempts(
        self, action: str, engine: AsyncEngine, work: Callable[[AsyncEngine], Awaitable[T]]
    ) -> T:
        return await run_with_retry(
            action, engine, work, budget=self._budget, retry=lambda: not self._closed
        )


def _usage_row(record: UsageRecord, cost: int) -> dict[str, Any]:
    identity = record.identity
    return {
        "started_at": as_utc(record.started_at),
        "day": day_of(record.started_at),
        "namespace": identity.namespace,
        "org": identity.org,
        "sandbox": identity.sandbox,
        "owner_sub": identity.owner_sub,
        "user_name": user_key(identity.owner_email, identity.owner_sub),
        "model": record.model[:255],
        "provider": record.provider[:64],
        "api": record.api[:32],
        "input_tokens": max(0, record.input_tokens),
        "output_tokens": max(0, record.output_tokens),
        "cache_read_tokens": max(0, record.cache_read_tokens),
        "cache_write_tokens": max(0, record.cache_write_tokens),
        "cost_nanos": cost,
        "latency_ms": float(record.latency_ms),
        "status": int(record.status),
        "stream": bool(record.stream),
    }
