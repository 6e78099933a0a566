"""The audit log on SQL (SQLite or PostgreSQL): ``services.audit.AuditStore``.

An append of a batch (the service group-commits what is queued) is one write
transaction; for each org of the batch, in name order::

    INSERT INTO sandbox_audit_heads (org, seq, hash) VALUES (:org, 0, GENESIS)
        ON CONFLICT (org) DO NOTHING                   -- the org's chain exists
    SELECT seq, hash FROM sandbox_audit_heads WHERE org = :org FOR UPDATE
    INSERT INTO sandbox_audit (...) VALUES (head + 1, ...), (head + 2, ...), ...
    UPDATE sandbox_audit_heads SET seq = :last, hash = :last_hash WHERE org = :org

On PostgreSQL the row lock makes a concurrent append of the same org wait until this
one commits and then read the new head, so the chain stays linear across processes and
replicas; orgs do not wait on each other. On SQLite write transactions begin
``IMMEDIATE`` (one writer at a time; an ``asyncio.Lock`` queues this process's).
The (org, seq) primary key refuses a second record with one number whatever happens.

Calls run under the store's rule (``sql_retry``): a time budget, one retry on fresh
connections for a transient failure, ``BackendUnavailable`` for the rest. A retried
append whose first commit did land is written twice (two records, both chained): an
audit log may say a thing twice, never lose it silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import structlog
from sqlalchemy import Select, TextClause, func, or_, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ..domain.audit import GENESIS, AuditEntry, AuditQuery, AuditRecord, chain
from .sql_audit_schema import heads, records
from .sql_engine import (
    SQLITE_BUSY_TIMEOUT_MS,
)
from .sql_sqlite import commit_in_thread
from .sql_tables import MigratedTables

log = structlog.get_logger(__name__)

T = TypeVar("T")


def _detail_text(detail: Any) -> str:
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row(record: AuditRecord) -> dict[str, Any]:
    return {
        "org": record.org,
        "seq": record.seq,
        "at": record.at,
        "actor_sub": record.actor_sub,
        "actor_email": record.actor_email,
        "action": record.action,
        "target": record.target,
        "outcome": record.outcome,
        "client": record.client,
        "detail": _detail_text(record.detail),
        "prev": record.prev,
        "hash": record.hash,
    }


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        org=row.org,
        seq=int(row.seq),
        at=_utc(row.at),
        action=row.action,
        actor_sub=row.actor_sub,
        actor_email=row.actor_email,
        target=row.target,
        outcome=row.outcome,
        client=row.client,
        detail=json.loads(row.detail),
        prev=row.prev,
        hash=row.hash,
    )


# --- an append: one synchronous transaction --------------------------------------------
#
# The same statements on both databases (named parameters, which sqlite3 and SQLAlchemy's
# text() both take); only the head's lock differs (SQLite's write transaction is the lock).

_NEW_HEAD = (
    "INSERT INTO sandbox_audit_heads (org, seq, hash) VALUES (:org, 0, :genesis)"
    " ON CONFLICT (org) DO NOTHING"
)
_HEAD = "SELECT seq, hash FROM sandbox_audit_heads WHERE org = :org"
_HEAD_LOCKED = _HEAD + " FOR UPDATE"
_INSERT = (
    "INSERT INTO sandbox_audit (org, seq, at, actor_sub, actor_email, action, target,"
    " outcome, client, detail, prev, hash) VALUES (:org, :seq, :at, :actor_sub,"
    " :actor_email, :action, :target, :outcome, :client, :detail, :prev, :hash)"
)
_MOVE_HEAD = "UPDATE sandbox_audit_heads SET seq = :seq, hash = :hash WHERE org = :org"
_TEXTS: dict[str, TextClause] = {
    sql: text(sql) for sql in (_NEW_HEAD, _HEAD, _HEAD_LOCKED, _INSERT, _MOVE_HEAD)
}
# how SQLAlchemy's SQLite DateTime stores a time (what the reads parse)
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


class _Db(Protocol):
    def one(self, sql: str, params: dict[str, Any]) -> Any: ...

    def run(self, sql: str, params: dict[str, Any] | list[dict[str, Any]]) -> None: ...


class _SaDb:
    """Statements on a synchronous SQLAlchemy connection (inside ``run_sync``)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def one(self, sql: str, params: dict[str, Any]) -> Any:
        return self._connection.execute(_TEXTS[sql], params).one()

    def run(self, sql: str, params: dict[str, Any] | list[dict[str, Any]]) -> None:
        self._connection.execute(_TEXTS[sql], params)


class _RawDb:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def one(self, sql: str, params: dict[str, Any]) -> Any:
        row = self._connection.execute(sql, params).fetchone()
        assert row is not None
        return row

    def run(self, sql: str, params: dict[str, Any] | list[dict[str, Any]]) -> None:
        if isinstance(params, list):
            self._connection.executemany(sql, params)
        else:
            self._connection.execute(sql, params)


def _append(
    db: _Db, cleaned: list[tuple[AuditEntry, datetime]], *, sqlite: bool
) -> list[AuditRecord]:
    by_org: dict[str, list[int]] = {}
    for i, (entry, _) in enumerate(cleaned):
        by_org.setdefault(entry.org, []).append(i)
    out: dict[int, AuditRecord] = {}
    for org in sorted(by_org):
        db.run(_NEW_HEAD, {"org": org, "genesis": GENESIS})
        seq, prev = db.one(_HEAD if sqlite else _HEAD_LOCKED, {"org": org})
        seq = int(seq)
        rows = []
        for i in by_org[org]:
            entry, at = cleaned[i]
            seq += 1
            record = chain(entry, seq=seq, at=at, prev=prev)
            prev = record.hash
            out[i] = record
            row = _row(record)
            if sqlite:
                row["at"] = record.at.replace(tzinfo=None).strftime(_SQLITE_DATETIME)
            rows.append(row)
        db.run(_INSERT, rows)
        db.run(_MOVE_HEAD, {"org": org, "seq": seq, "hash": prev})
    return [out[i] for i in range(len(cleaned))]


_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
FIRST_PAUSE, LAST_PAUSE = 0.0002, 0.005  # seconds between two tries on a locked database
CHECKPOINT_EVERY = 256


def _locked(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


def _as_sqlalchemy_error(exc: sqlite3.Error) -> sa_exc.DBAPIError:
    """What the store's retry rule and error mapping know (``sql_errors``)."""
    kind = (
        sa_exc.OperationalError if isinstance(exc, sqlite3.OperationalError) else sa_exc.DBAPIError
    )
    return kind(None, None, exc)


class _SqliteDirect:
    """The appends on SQLite: one ``sqlite3`` connection (``synchronous=FULL``: a
    returned record is fsynced), one transaction per batch, its statements on the event
    loop and its COMMIT (the WAL write and the fsync) in a thread of its own
    (``sql_sqlite.commit_in_thread``; issue 11: on the loop, a burst of creates stopped
    it in these fsyncs). Through aiosqlite every statement was a hop to its thread and
    back with the database's write lock held in between (the store's writes waiting
    behind it); here the lock is held for the statements and the COMMIT only. A locked
    database (another connection writing) is tried again after 0.2 ms, doubling up to
    5 ms, for at most ``SQLITE_BUSY_TIMEOUT_MS``. Every ``CHECKPOINT_EVERY`` commits a
    worker thread runs a passive WAL checkpoint (none on the loop)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._writing = asyncio.Lock()  # one batch at a time on the connection
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-commit")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-sqlite")
        self._worker: sqlite3.Connection | None = None
        self._commits = 0

    def _connect(self, *, busy_ms: int, autocheckpoint: int) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=busy_ms / 1000
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute(f"PRAGMA wal_autocheckpoint = {autocheckpoint}")
        except BaseException:
            connection.close()
            raise
        return connection

    @staticmethod
    def _statements(connection: sqlite3.Connection, work: Callable[[_Db], T]) -> T:
        """``work`` in a write transaction left open for its COMMIT."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            return work(_RawDb(connection))
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    async def run(self, work: Callable[[_Db], T]) -> T:
        async with self._writing:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SQLITE_BUSY_TIMEOUT_MS / 1000
            pause = FIRST_PAUSE
            while True:
                try:
                    if self._connection is None:
                        self._connection = self._connect(busy_ms=0, autocheckpoint=0)
                    value = self._statements(self._connection, work)
                    await commit_in_thread(self._connection, self._committer)
                    break
                except sqlite3.OperationalError as exc:
                    if not _locked(exc) or loop.time() + pause > deadline:
                        self._drop()
                        raise _as_sqlalchemy_error(exc) from exc
                except sqlite3.Error as exc:
                    self._drop()
                    raise _as_sqlalchemy_error(exc) from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, LAST_PAUSE)
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0:
            loop.run_in_executor(self._executor, self._checkpoint)
        return value

    def _drop(self) -> None:
        """A fresh connection for the next try (after a failure)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    def _checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._worker is None:
                self._worker = self._connect(busy_ms=SQLITE_BUSY_TIMEOUT_MS, autocheckpoint=1000)
            self._worker.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def close(self) -> None:
        async with self._writing:  # a COMMIT in flight ends first
            self._drop()
        self._committer.shutdown(wait=False)

        def close_worker() -> None:
            if self._worker is not None:
                self._worker.close()
                self._worker = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close_worker)
        self._executor.shutdown(wait=False)


class SqlAuditStore(MigratedTables):
    def __init__(self, url: str, *, call_timeout: float = 5.0, echo: bool = False) -> None:
        super().__init__(url, name="audit", call_timeout=call_timeout, echo=echo)
        self._direct: _SqliteDirect | None = None

    async def _opened(self) -> None:
        if self._sqlite:
            assert self._url.database is not None
            self._direct = _SqliteDirect(self._url.database)

    async def _closing(self) -> None:
        direct, self._direct = self._direct, None
        if direct is not None:
            await direct.close()

    # --- writes -----------------------------------------------------------------------

    async def append(self, entry: AuditEntry, at: datetime) -> AuditRecord:
        (record,) = await self.append_many([(entry, at)])
        return record

    async def append_many(
        self, entries: Sequence[tuple[AuditEntry, datetime]]
    ) -> list[AuditRecord]:
        """Every entry chained in order, in one transaction. Each org's head is locked
        once, orgs in name order (two writers never wait on each other crosswise)."""
        cleaned = [(entry.cleaned(), _utc(at)) for entry, at in entries]
        sqlite = self._sqlite

        def work(db: _Db) -> list[AuditRecord]:
            return _append(db, cleaned, sqlite=sqlite)

        engine = await self._ready()
        direct = self._direct
        if direct is not None:

            async def on_sqlite(_engine: AsyncEngine) -> list[AuditRecord]:
                return await direct.run(work)

            return await self._attempts("audit.append", engine, on_sqlite)

        async def on_postgres(engine: AsyncEngine) -> list[AuditRecord]:
            async with engine.connect() as connection:
                value = await connection.run_sync(lambda sync: work(_SaDb(sync)))
                await connection.commit()
                return value

        return await self._attempts("audit.append", engine, on_postgres)

    # --- reads ------------------------------------------------------------------------

    async def _rows(self, action: str, statement: Select[Any]) -> list[Any]:
        async def work(engine: AsyncEngine) -> list[Any]:
            async with engine.connect() as connection:
                return list((await connection.execute(statement)).all())

        return await self._call(action, work)

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        c = records.c
        statement = select(records).where(c.org == query.org)
        if query.since is not None:
            statement = statement.where(c.at >= _utc(query.since))
        if query.until is not None:
            statement = statement.where(c.at < _utc(query.until))
        if query.actor:
            statement = statement.where(
                or_(c.actor_sub == query.actor, func.lower(c.actor_email) == query.actor.lower())
            )
        if query.action.endswith(".*"):
            prefix = query.action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            statement = statement.where(c.action.like(f"{prefix}%", escape="\\"))
        elif query.action:
            statement = statement.where(c.action == query.action)
        if query.before is not None:
            statement = statement.where(c.seq < query.before)
        if query.after is not None:
            statement = statement.where(c.seq > query.after)
        order = c.seq.desc() if query.newest_first else c.seq.asc()
        rows = await self._rows("audit.query", statement.order_by(order).limit(query.limit))
        return [_record(row) for row in rows]

    async def orgs(self) -> list[str]:
        rows = await self._rows("audit.orgs", select(heads.c.org).order_by(heads.c.org))
        return [row.org for row in rows]

    async def chain_of(self, org: str, after: int, limit: int) -> list[AuditRecord]:
        c = records.c
        statement = (
            select(records).where(c.org == org, c.seq > after).order_by(c.seq.asc()).limit(limit)
        )
        return [_record(row) for row in await self._rows("audit.chain", statement)]

    async def head(self, org: str) -> tuple[int, str]:
        rows = await self._rows(
            "audit.head", select(heads.c.seq, heads.c.hash).where(heads.c.org == org)
        )
        return (int(rows[0].seq), rows[0].hash) if rows else (0, GENESIS)
