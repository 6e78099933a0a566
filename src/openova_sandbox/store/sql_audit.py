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
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..domain.audit import GENESIS, AuditEntry, AuditQuery, AuditRecord, chain
from .sql_audit_schema import heads, records
from .sql_engine import create_engine, migrate, migration_lock, parse_url, safe_url
from .sql_retry import EngineCalls

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


class SqlAuditStore(EngineCalls):
    def __init__(self, url: str, *, call_timeout: float = 5.0, echo: bool = False) -> None:
        self._url = parse_url(url)
        self._budget = call_timeout
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._start_lock = asyncio.Lock()
        self._sqlite = self._url.get_backend_name() == "sqlite"
        self._write_lock = asyncio.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        return safe_url(self._url)

    async def start(self) -> None:
        async with self._start_lock:
            if self._engine is not None:
                return
            self._closed = False
            engine = create_engine(self._url, echo=self._echo, connect_timeout=self._budget)
            try:
                await self._attempts("audit.migrate", engine, self._migrate)
            except BaseException:
                await engine.dispose()
                raise
            self._engine = engine
            log.info("audit.started", backend=self._url.get_backend_name(), url=self.url)

    async def close(self) -> None:
        self._closed = True
        async with self._start_lock:
            engine, self._engine = self._engine, None
            if engine is not None:
                await engine.dispose()

    async def _migrate(self, engine: AsyncEngine) -> None:
        async with migration_lock(), engine.connect() as connection:
            connection = await connection.execution_options(sqlite_begin="immediate")
            await connection.run_sync(migrate)
            await connection.commit()

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
        by_org: dict[str, list[int]] = {}
        for i, (entry, _) in enumerate(cleaned):
            by_org.setdefault(entry.org, []).append(i)
        insert_head = sqlite_insert if self._sqlite else pg_insert

        async def work(connection: AsyncConnection) -> list[AuditRecord]:
            out: list[AuditRecord | None] = [None] * len(cleaned)
            for org in sorted(by_org):
                await connection.execute(
                    insert_head(heads)
                    .values(org=org, seq=0, hash=GENESIS)
                    .on_conflict_do_nothing(index_elements=["org"])
                )
                head = (
                    await connection.execute(
                        select(heads.c.seq, heads.c.hash)
                        .where(heads.c.org == org)
                        .with_for_update()
                    )
                ).one()
                seq, prev = int(head.seq), head.hash
                rows = []
                for i in by_org[org]:
                    entry, at = cleaned[i]
                    seq += 1
                    record = chain(entry, seq=seq, at=at, prev=prev)
                    prev = record.hash
                    out[i] = record
                    rows.append(_row(record))
                await connection.execute(records.insert(), rows)
                await connection.execute(
                    update(heads).where(heads.c.org == org).values(seq=seq, hash=prev)
                )
            return [r for r in out if r is not None]

        return await self._write("audit.append", work)

    async def _write(self, action: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
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
