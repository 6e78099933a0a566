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

The three calls of every gateway request (authenticate, reserve, settle) are the hot
path: their SQL is written once as text (the same on both databases) and each call is
one synchronous function run in one transaction - on SQLite on the event loop, on the
ledger's own ``sqlite3`` connection that never waits for a lock (a locked database sends
the call to a second connection in a worker thread; ``_SqliteHotPath``), on PostgreSQL
through ``run_sync`` on a pooled asyncpg connection. A token's identity is cached for
``TOKEN_CACHE_SECONDS`` per process (a revoke or a new token in this process applies at
once). The ``INSERT ... ON CONFLICT DO NOTHING`` of a month's row is skipped once this
process has seen the row committed (rows of ``gateway_spend`` are never deleted).

Durability on SQLite: the hot path's connection runs ``synchronous=NORMAL`` (WAL): a
committed reservation or settlement survives the process crashing at once, and the OS
crashing or the power failing from the next WAL sync (a checkpoint, or any
``synchronous=FULL`` commit - tokens and budgets are written through the store's
engine, which keeps ``FULL``). ``docs/gateway.md`` ("Durability of the ledger") says
why that is the right trade for metering.

Calls run under the store's rule (``sql_retry``): a time budget, one retry on fresh
connections for a transient failure, ``BackendUnavailable`` for the rest.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar, cast

import structlog
from sqlalchemy import (
    ColumnElement,
    TextClause,
    and_,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
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
from .sql_engine import (
    SQLITE_BUSY_TIMEOUT_MS,
)
from .sql_ledger_schema import budgets, reservations, spend, tokens, usage
from .sql_sqlite import commit_in_thread
from .sql_tables import MigratedTables

log = structlog.get_logger(__name__)

T = TypeVar("T")
RESERVATION_TTL = timedelta(hours=1)
SWEEP_EVERY_SECONDS = 60.0
KEEP_SETTLED = timedelta(days=7)
# how long a token's identity is taken from this process's cache: a revoke or a new
# token in this process applies at once; one in another process within this time
TOKEN_CACHE_SECONDS = 2.0
TOKEN_CACHE_ENTRIES = 10_000
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


# --- the hot path: three calls a request, as prepared SQL ---------------------------------
#
# authenticate, reserve and settle run these statements, written once (the same text
# on both databases) and executed as one synchronous function per transaction: on
# SQLite by ``_SqliteHotPath`` (on the event loop, or in its worker thread when the
# database is locked), on PostgreSQL through ``run_sync`` on the pooled asyncpg
# connection. SQLAlchemy builds and compiles nothing per call.

_LOOKUP = (
    "SELECT sandbox, namespace, owner_sub, owner_email, org FROM gateway_tokens"
    " WHERE token_sha256 = :digest"
)
_OVERRIDES = (
    "SELECT scope, name, limit_nanos FROM gateway_budgets WHERE namespace = :namespace"
    " AND ((scope = 'org' AND name = :org) OR (scope = 'user' AND name = :user)"
    " OR (scope = 'sandbox' AND name = :sandbox))"
)
_ENSURE = (
    "INSERT INTO gateway_spend (month, scope, namespace, name, spent_nanos, reserved_nanos)"
    " VALUES (:month, :scope, :namespace, :name, 0, 0)"
    " ON CONFLICT (month, scope, namespace, name) DO NOTHING"
)
_RESERVE = (
    "UPDATE gateway_spend SET reserved_nanos = reserved_nanos + :amount"
    " WHERE month = :month AND scope = :scope AND namespace = :namespace AND name = :name"
)
_RESERVE_CAPPED = (
    "UPDATE gateway_spend SET reserved_nanos = reserved_nanos + :amount"
    " WHERE month = :month AND scope = :scope AND namespace = :namespace AND name = :name"
    " AND spent_nanos + reserved_nanos + :amount <= :limit"
    " AND spent_nanos + reserved_nanos < :limit"
)
_NEW_RESERVATION = (
    "INSERT INTO gateway_reservations (id, month, namespace, user_name, sandbox,"
    " amount_nanos, created_at, settled_at, released) VALUES (:id, :month, :namespace,"
    " :user_name, :sandbox, :amount, :created_at, NULL, :released)"
)
_CLAIM = (
    "UPDATE gateway_reservations SET settled_at = :now WHERE id = :id AND settled_at IS NULL"
    " RETURNING month, namespace, user_name, sandbox, amount_nanos, released"
)
_KNOWN = "SELECT id FROM gateway_reservations WHERE id = :id"
_SETTLE = (
    "UPDATE gateway_spend SET spent_nanos = spent_nanos + :cost,"
    " reserved_nanos = reserved_nanos - :release"
    " WHERE month = :month AND scope = :scope AND namespace = :namespace AND name = :name"
)
_NEW_USAGE = (
    "INSERT INTO gateway_usage (started_at, day, namespace, org, sandbox, owner_sub,"
    " user_name, model, provider, api, input_tokens, output_tokens, cache_read_tokens,"
    " cache_write_tokens, cost_nanos, latency_ms, status, stream) VALUES (:started_at, :day,"
    " :namespace, :org, :sandbox, :owner_sub, :user_name, :model, :provider, :api,"
    " :input_tokens, :output_tokens, :cache_read_tokens, :cache_write_tokens, :cost_nanos,"
    " :latency_ms, :status, :stream)"
)
_DROP_TOKEN = "DELETE FROM gateway_tokens WHERE namespace = :namespace AND sandbox = :sandbox"
_NEW_TOKEN = (
    "INSERT INTO gateway_tokens (namespace, sandbox, token_sha256, owner_sub, owner_email,"
    " org, issued_at) VALUES (:namespace, :sandbox, :digest, :owner_sub, :owner_email, :org,"
    " :issued_at)"
)


# A session item's last 30 days, on every read of a session (``usage_rows`` in the
# items' shape: one namespace, named sandboxes, a window, grouped by sandbox). Built per
# call with SQLAlchemy and run through aiosqlite's thread this took 2-5 ms for one
# sandbox, most of ``GET /sessions/{id}`` (~0.35 ms building the select, the rest its
# compilation and the hops to the thread and back); here 0.04-0.07 ms. Written once,
# per number of names rounded up to a power of two (the list padded with its last name:
# ten statements in all, each prepared once by the driver), and run like the hot path's
# reads.
ITEM_BATCH = 512  # sandbox names per statement at most (SQLite takes 32766 parameters)
_ITEM_SUMS = (
    "SELECT sandbox, count(*), sum(input_tokens), sum(output_tokens),"
    " sum(cache_read_tokens), sum(cache_write_tokens), sum(cost_nanos) FROM gateway_usage"
    " WHERE namespace = :namespace AND sandbox IN ({names})"
    " AND started_at >= :since AND started_at < :until GROUP BY sandbox"
)
_ITEM_SIZES = tuple(1 << bit for bit in range(ITEM_BATCH.bit_length()))  # 1, 2, 4 ... 512
_ITEM_PARAMS = {size: tuple(f"s{i}" for i in range(size)) for size in _ITEM_SIZES}
_ITEM_STATEMENTS = {
    size: _ITEM_SUMS.format(names=", ".join(f":{name}" for name in _ITEM_PARAMS[size]))
    for size in _ITEM_SIZES
}
_TEXTS: dict[str, TextClause] = {
    sql: text(sql)
    for sql in (
        *_ITEM_STATEMENTS.values(),
        _DROP_TOKEN,
        _NEW_TOKEN,
        _LOOKUP,
        _OVERRIDES,
        _ENSURE,
        _RESERVE,
        _RESERVE_CAPPED,
        _NEW_RESERVATION,
        _CLAIM,
        _KNOWN,
        _SETTLE,
        _NEW_USAGE,
    )
}
# how SQLAlchemy's SQLite dialect stores a DateTime (compared as text there)
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


class _Db(Protocol):
    """One statement: the rows it returned (if any) and how many rows it touched."""

    def run(self, sql: str, params: dict[str, Any]) -> tuple[int, list[Any]]: ...


class _SaDb:
    """A statement on a synchronous SQLAlchemy connection (inside ``run_sync``)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def run(self, sql: str, params: dict[str, Any]) -> tuple[int, list[Any]]:
        result = self._connection.execute(_TEXTS[sql], params)
        if result.returns_rows:
            rows = list(result.all())
            return len(rows), rows
        return int(result.rowcount), []


class _RawDb:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def run(self, sql: str, params: dict[str, Any]) -> tuple[int, list[Any]]:
        cursor = self._connection.execute(sql, params)
        rows = cursor.fetchall()
        return (len(rows) if cursor.description else cursor.rowcount), rows


def _as_sqlalchemy_error(exc: sqlite3.Error) -> sa_exc.DBAPIError:
    """What the store's retry rule and error mapping know (``sql_errors``)."""
    kind = (
        sa_exc.OperationalError if isinstance(exc, sqlite3.OperationalError) else sa_exc.DBAPIError
    )
    return kind(None, None, exc)


_SQLITE_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)
CHECKPOINT_EVERY = 500  # commits on the event loop between two WAL checkpoints


class _SqliteHotPath:
    """The ledger's own sqlite3 connections, ``synchronous=NORMAL`` (WAL; see
    ``docs/gateway.md``, "Durability of the ledger").

    A call first runs on the event loop itself, on a connection that never waits for a
    lock (``busy_timeout=0``) and never checkpoints: a transaction of a few statements
    that fsyncs nothing takes tens of microseconds, less than a hop to a thread and
    back. A durable write (a token's issue) runs its statements on the loop too, on a
    ``FULL`` connection of its own, and its COMMIT (the fsync) in a thread
    (``sql_sqlite.commit_in_thread``; issue 11: on the loop, a burst of creates stopped
    it in these fsyncs). When the database is locked (another process is writing) the
    call runs instead on the second connection, in one worker thread, which waits up to
    the store's busy timeout. Every ``CHECKPOINT_EVERY`` commits on the loop the worker
    runs a passive WAL checkpoint."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._inline: sqlite3.Connection | None = None
        # durable writes: statements on the loop, the COMMIT in the committer thread
        self._durable: sqlite3.Connection | None = None
        self._durable_writing = asyncio.Lock()
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-commit")
        self._threaded: sqlite3.Connection | None = None
        self._commits = 0

    def _connect(self, busy_ms: int, autocheckpoint: int) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path,
            isolation_level=None,  # BEGIN/COMMIT are ours
            check_same_thread=False,
            timeout=busy_ms / 1000,
        )
        connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute(f"PRAGMA wal_autocheckpoint = {autocheckpoint}")
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    @staticmethod
    def _transaction(connection: sqlite3.Connection, fn: Callable[[_Db], T], write: bool) -> T:
        if not write:
            return fn(_RawDb(connection))
        connection.execute("BEGIN IMMEDIATE")
        try:
            value = fn(_RawDb(connection))
            connection.execute("COMMIT")
            return value
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _in_thread(self, fn: Callable[[_Db], T], write: bool, durable: bool = False) -> T:
        try:
            if self._threaded is None:
                self._threaded = self._connect(SQLITE_BUSY_TIMEOUT_MS, 1000)
            return self._durably(self._threaded, fn, write, durable)
        except sqlite3.Error as exc:
            raise _as_sqlalchemy_error(exc) from exc

    def _checkpoint(self) -> None:
        try:
            if self._threaded is None:
                self._threaded = self._connect(SQLITE_BUSY_TIMEOUT_MS, 1000)
            self._threaded.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("ledger.checkpoint_failed", error=str(exc))

    async def run(self, fn: Callable[[_Db], T], *, write: bool, durable: bool = False) -> T:
        """``durable``: this write's commit is fsynced before it returns
        (``synchronous=FULL`` for it; the worker's connection is ``NORMAL`` too, so a
        locked database's durable write runs there the same way)."""
        if write and durable:
            return await self._durable_write(fn)
        try:
            if self._inline is None:
                self._inline = self._connect(0, 0)
            value = self._transaction(self._inline, fn, write)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in _SQLITE_BUSY:
                raise _as_sqlalchemy_error(exc) from exc
        except sqlite3.Error as exc:
            raise _as_sqlalchemy_error(exc) from exc
        else:
            if write:
                self._counted_commit()
            return value
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_thread, fn, write, False)

    async def _durable_write(self, fn: Callable[[_Db], T]) -> T:
        async with self._durable_writing:
            try:
                if self._durable is None:
                    self._durable = self._connect(0, 0)
                    self._durable.execute("PRAGMA synchronous = FULL")
                connection = self._durable
                connection.execute("BEGIN IMMEDIATE")
                try:
                    value = fn(_RawDb(connection))
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise
                await commit_in_thread(connection, self._committer)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in _SQLITE_BUSY:
                    raise _as_sqlalchemy_error(exc) from exc
            except sqlite3.Error as exc:
                raise _as_sqlalchemy_error(exc) from exc
            else:
                self._counted_commit()
                return value
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_thread, fn, True, True)

    def _counted_commit(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0:
            self._executor.submit(self._checkpoint)

    def _durably(
        self, connection: sqlite3.Connection, fn: Callable[[_Db], T], write: bool, durable: bool
    ) -> T:
        if not durable:
            return self._transaction(connection, fn, write)
        connection.execute("PRAGMA synchronous = FULL")
        try:
            return self._transaction(connection, fn, write)
        finally:
            connection.execute("PRAGMA synchronous = NORMAL")

    def _close_threaded(self) -> None:
        connection, self._threaded = self._threaded, None
        if connection is not None:
            connection.close()

    async def close(self) -> None:
        connection, self._inline = self._inline, None
        if connection is not None:
            connection.close()
        async with self._durable_writing:  # a COMMIT in flight ends first
            durable, self._durable = self._durable, None
            if durable is not None:
                durable.close()
        self._committer.shutdown(wait=False)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_threaded)
        self._executor.shutdown(wait=False)


def _key_params(month: str, key: BudgetKey) -> dict[str, Any]:
    return {"month": month, "scope": key.scope, "namespace": key.namespace, "name": key.name}


def _lookup(db: _Db, digest: str) -> GatewayIdentity | None:
    _, rows = db.run(_LOOKUP, {"digest": digest})
    if not rows:
        return None
    sandbox, namespace, owner_sub, owner_email, org = rows[0]
    return GatewayIdentity(
        sandbox=sandbox,
        namespace=namespace,
        owner_sub=owner_sub,
        owner_email=owner_email,
        org=org,
    )


class SqlLedger(MigratedTables):
    def __init__(
        self,
        url: str,
        *,
        defaults: BudgetDefaults | None = None,
        clock: Callable[[], datetime] = utcnow,
        reservation_ttl: timedelta = RESERVATION_TTL,
        call_timeout: float = 5.0,
        echo: bool = False,
        token_cache_seconds: float = TOKEN_CACHE_SECONDS,
    ) -> None:
        # (PostgreSQL writers run concurrently: row locks order them)
        super().__init__(url, name="ledger", call_timeout=call_timeout, echo=echo)
        self.defaults = defaults or BudgetDefaults()
        self._clock = clock
        self._ttl = reservation_ttl
        self._next_sweep = 0.0
        self._hot_path: _SqliteHotPath | None = None
        # the (month, budget) rows of gateway_spend known to exist (they are never
        # deleted): their INSERT ... ON CONFLICT DO NOTHING is skipped
        self._known_rows: set[tuple[str, BudgetKey]] = set()
        # sha256 -> (identity, monotonic expiry); (namespace, sandbox) -> sha256
        self._token_ttl = token_cache_seconds
        self._identities: dict[str, tuple[GatewayIdentity, float]] = {}
        self._digests: dict[tuple[str, str], str] = {}
        self._token_generation = 0  # bumped by every change: a lookup racing one is not kept

    # --- lifecycle --------------------------------------------------------------------

    async def _opened(self) -> None:
        if self._sqlite:
            assert self._url.database is not None
            self._hot_path = _SqliteHotPath(self._url.database)

    async def _closing(self) -> None:
        hot_path, self._hot_path = self._hot_path, None
        if hot_path is not None:
            await hot_path.close()

    # --- tokens -----------------------------------------------------------------------

    async def issue_token(self, identity: GatewayIdentity) -> str:
        """On the hot path (issue 10: through SQLAlchemy and aiosqlite this write took
        2-10 ms, on the way of a new sandbox's first agent start), fsynced like every
        token write."""
        token = new_token()
        params = {
            "namespace": identity.namespace,
            "sandbox": identity.sandbox,
            "digest": hash_token(token),
            "owner_sub": identity.owner_sub,
            "owner_email": identity.owner_email,
            "org": identity.org,
            "issued_at": self._stamp(self._clock()),
        }

        def work(db: _Db) -> None:
            db.run(_DROP_TOKEN, {"namespace": identity.namespace, "sandbox": identity.sandbox})
            db.run(_NEW_TOKEN, params)

        self._forget_token(identity.namespace, identity.sandbox)
        try:
            await self._hot("ledger.issue_token", work, write=True, durable=True)
        finally:
            self._forget_token(identity.namespace, identity.sandbox)
        return token

    async def revoke(self, namespace: str, sandbox: str) -> None:
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                delete(tokens).where(tokens.c.namespace == namespace, tokens.c.sandbox == sandbox)
            )

        self._forget_token(namespace, sandbox)
        try:
            await self._write("ledger.revoke", work)
        finally:
            self._forget_token(namespace, sandbox)

    async def authenticate(self, token: str) -> GatewayIdentity | None:
        if not token:
            return None
        digest = hash_token(token)
        cached = self._identities.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        generation = self._token_generation
        identity = await self._hot(
            "ledger.authenticate", lambda db: _lookup(db, digest), write=False
        )
        if identity is None or self._token_ttl <= 0 or generation != self._token_generation:
            self._identities.pop(digest, None)
            return identity
        if len(self._identities) >= TOKEN_CACHE_ENTRIES:
            self._identities.clear()
            self._digests.clear()
        self._identities[digest] = (identity, time.monotonic() + self._token_ttl)
        self._digests[(identity.namespace, identity.sandbox)] = digest
        return identity

    def _forget_token(self, namespace: str, sandbox: str) -> None:
        self._token_generation += 1
        digest = self._digests.pop((namespace, sandbox), None)
        if digest is not None:
            self._identities.pop(digest, None)

    # --- reservations -----------------------------------------------------------------

    async def reserve(self, identity: GatewayIdentity, amount_usd: Decimal) -> str:
        now = as_utc(self._clock())
        await self._maybe_sweep(now)
        month = month_of(now)
        amount = to_nanos(max(amount_usd, Decimal(0)), round_up=True)
        keys = identity.budget_keys()
        reservation_id = new_reservation_id()
        known = self._known_rows
        defaults = self.defaults
        created_at = self._stamp(now)

        def work(db: _Db) -> None:
            _, rows = db.run(
                _OVERRIDES,
                {
                    "namespace": identity.namespace,
                    "org": identity.namespace,
                    "user": identity.user,
                    "sandbox": identity.sandbox,
                },
            )
            limits: dict[BudgetKey, int | None] = {
                BudgetKey(cast(Scope, scope), identity.namespace, name): (
                    None if limit is None else int(limit)
                )
                for scope, name, limit in rows
            }
            for key in keys:
                limit = resolve_limit(key, defaults, limits)
                params = _key_params(month, key)
                if (month, key) not in known:
                    db.run(_ENSURE, params)
                params["amount"] = amount
                if limit is None:
                    touched, _ = db.run(_RESERVE, params)
                else:
                    params["limit"] = limit
                    touched, _ = db.run(_RESERVE_CAPPED, params)
                if touched != 1:
                    assert limit is not None
                    raise BudgetExceeded(key, from_nanos(limit), month)
            db.run(
                _NEW_RESERVATION,
                {
                    "id": reservation_id,
                    "month": month,
                    "namespace": identity.namespace,
                    "user_name": identity.user,
                    "sandbox": identity.sandbox,
                    "amount": amount,
                    "created_at": created_at,
                    "released": self._flag(False),
                },
            )

        await self._hot("ledger.reserve", work, write=True)
        known.update((month, key) for key in keys)  # committed: the rows exist from now on
        return reservation_id

    async def settle(self, reservation_id: str, record: UsageRecord) -> None:
        now = as_utc(self._clock())
        cost = to_nanos(max(record.cost_usd, Decimal(0)))
        known = self._known_rows
        row = _usage_row(record, cost)
        row["started_at"] = self._stamp(row["started_at"])
        row["stream"] = self._flag(row["stream"])
        settled_at = self._stamp(now)
        touched_rows: list[tuple[str, BudgetKey]] = []

        def work(db: _Db) -> None:
            _, claimed = db.run(_CLAIM, {"now": settled_at, "id": reservation_id})
            keys: tuple[BudgetKey, ...]
            if not claimed:
                _, seen = db.run(_KNOWN, {"id": reservation_id})
                if seen:
                    return  # settled before: nothing more to do
                log.warning("ledger.settle_unknown_reservation", sandbox=record.identity.sandbox)
                month, keys, release = month_of(record.started_at), record.identity.budget_keys(), 0
            else:
                month, namespace, user_name, sandbox, amount, released = claimed[0]
                keys = _reservation_keys(namespace, user_name, sandbox)
                release = 0 if released else int(amount)
            for key in keys:
                params = _key_params(month, key)
                if (month, key) not in known:
                    db.run(_ENSURE, params)
                    touched_rows.append((month, key))
                params["cost"] = cost
                params["release"] = release
                db.run(_SETTLE, params)
            db.run(_NEW_USAGE, row)

        await self._hot("ledger.settle", work, write=True)
        known.update(touched_rows)

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
        if (
            query.group_by == "sandbox"
            and not query.by_day
            and query.owner_sub is None
            and query.sandboxes is not None
            and query.until is not None
        ):
            return await self.item_usage_rows(query)
        return await self.general_usage_rows(query)

    async def item_usage_rows(self, query: UsageQuery) -> list[UsageRow]:
        """``usage_rows`` in the items' shape (named sandboxes of one namespace, a
        window, per sandbox; ``owner_sub`` and ``by_day`` are not looked at): the SQL of
        ``_ITEM_STATEMENTS``, ``ITEM_BATCH`` names per statement, on the hot path's
        connection (SQLite: on the event loop)."""
        names = list(dict.fromkeys(query.sandboxes or ()))
        if not names:
            return []
        assert query.until is not None
        base = {
            "namespace": query.namespace,
            "since": self._stamp(query.since),
            "until": self._stamp(query.until),
        }
        batches = [names[i : i + ITEM_BATCH] for i in range(0, len(names), ITEM_BATCH)]

        def work(db: _Db) -> list[UsageRow]:
            out = []
            for batch in batches:
                size = next(size for size in _ITEM_SIZES if size >= len(batch))
                padded = batch + batch[-1:] * (size - len(batch))
                params = dict(base)
                params.update(zip(_ITEM_PARAMS[size], padded, strict=True))
                _, rows = db.run(_ITEM_STATEMENTS[size], params)
                for sandbox, requests, inputs, outputs, cache_read, cache_write, cost in rows:
                    out.append(
                        UsageRow(
                            day=None,
                            group=sandbox,
                            totals=UsageTotals(
                                requests=int(requests),
                                input_tokens=int(inputs or 0),
                                output_tokens=int(outputs or 0),
                                cache_read_tokens=int(cache_read or 0),
                                cache_write_tokens=int(cache_write or 0),
                                cost_nanos=int(cost or 0),
                            ),
                        )
                    )
            return out

        return await self._hot("ledger.usage", work, write=False)

    async def general_usage_rows(self, query: UsageQuery) -> list[UsageRow]:
        """``usage_rows`` for any query (reports, budgets), built with SQLAlchemy."""
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

    def _stamp(self, moment: datetime) -> Any:
        """A time as a parameter of the hot path's SQL: SQLAlchemy's text form on
        SQLite (compared as text there), an aware datetime on PostgreSQL."""
        moment = as_utc(moment)
        return moment.replace(tzinfo=None).strftime(_SQLITE_DATETIME) if self._sqlite else moment

    def _flag(self, value: bool) -> Any:
        return int(value) if self._sqlite else value

    async def _hot(
        self, action: str, fn: Callable[[_Db], T], *, write: bool, durable: bool = False
    ) -> T:
        """One hot-path call in one transaction (a write one when ``write``; fsynced
        before it returns when ``durable``), under the store's retry rule."""
        engine = await self._ready()
        hot_path = self._hot_path
        if hot_path is not None:

            async def on_sqlite(_engine: AsyncEngine) -> T:
                return await hot_path.run(fn, write=write, durable=durable)

            return await self._attempts(action, engine, on_sqlite)

        async def on_postgres(connection: AsyncConnection) -> T:
            return await connection.run_sync(lambda sync: fn(_SaDb(sync)))

        if write:
            return await self._write(action, on_postgres)

        async def read(engine: AsyncEngine) -> T:
            async with engine.connect() as connection:
                return await on_postgres(connection)

        return await self._attempts(action, engine, read)

    def _insert(self, table: Any) -> Any:
        return (sqlite_insert if self._sqlite else pg_insert)(table)

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
