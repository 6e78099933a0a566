"""The console's OIDC sessions on SQL (SQLite or PostgreSQL); migration 0005 creates the
table (``auth/oidc_sessions.py`` is the service; this is its ``SessionBackend``).

``sandbox_oidc_sessions``: one row per session, keyed by the SHA-256 of the session id
(the table gives no cookie away), holding the record already encrypted by the service
(the database never sees a token in clear) and its expiry, by which expired rows are
removed. Like the ledger and the access tokens: its own engine on the store's database
(Kubernetes mode: ``SANDBOX_DATABASE_URL``, so every API replica sees every session),
migrations at start, every call under the store's rule (``sql_retry``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .sql_engine import create_engine, migrate, migration_lock, parse_url, safe_url
from .sql_retry import EngineCalls

log = structlog.get_logger(__name__)

metadata = MetaData()

oidc_sessions = Table(
    "sandbox_oidc_sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),
    Column("record", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class SqlSessionBackend(EngineCalls):
    """``get``/``put``/``delete``/``prune`` of encrypted session records by key."""

    def __init__(self, url: str, *, call_timeout: float = 5.0, echo: bool = False) -> None:
        self._url = parse_url(url)
        self._budget = call_timeout
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._sqlite = self._url.get_backend_name() == "sqlite"
        self._write_lock = asyncio.Lock()  # SQLite: one writer at a time, queued here

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
                await self._attempts("oidc_sessions.migrate", engine, self._migrate)
            except BaseException:
                await engine.dispose()
                raise
            self._engine = engine
            log.info("oidc_sessions.started", backend=self._url.get_backend_name(), url=self.url)

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

    async def _read(self, action: str, work: Any) -> Any:
        async def run(engine: AsyncEngine) -> Any:
            async with engine.connect() as connection:
                return await work(connection)

        return await self._call(action, run)

    async def _write(self, action: str, work: Any) -> Any:
        async def run(engine: AsyncEngine) -> Any:
            async with engine.connect() as connection:
                connection = await connection.execution_options(sqlite_begin="immediate")
                async with connection.begin():
                    return await work(connection)

        if self._sqlite:
            async with self._write_lock:
                return await self._call(action, run)
        return await self._call(action, run)

    async def get(self, key: str) -> bytes | None:
        async def work(connection: AsyncConnection) -> bytes | None:
            value = await connection.scalar(
                select(oidc_sessions.c.record).where(oidc_sessions.c.id_sha256 == key)
            )
            return None if value is None else str(value).encode("ascii")

        result: bytes | None = await self._read("oidc_sessions.get", work)
        return result

    async def put(self, key: str, blob: bytes, expires_at: float) -> None:
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(delete(oidc_sessions).where(oidc_sessions.c.id_sha256 == key))
            await connection.execute(
                insert(oidc_sessions).values(
                    id_sha256=key, record=blob.decode("ascii"), expires_at=_when(expires_at)
                )
            )

        await self._write("oidc_sessions.put", work)

    async def delete(self, key: str) -> None:
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(delete(oidc_sessions).where(oidc_sessions.c.id_sha256 == key))

        await self._write("oidc_sessions.delete", work)

    async def prune(self, now: float) -> int:
        async def work(connection: AsyncConnection) -> int:
            result = await connection.execute(
                delete(oidc_sessions).where(oidc_sessions.c.expires_at <= _when(now))
            )
            return int(result.rowcount or 0)

        removed: int = await self._write("oidc_sessions.prune", work)
        return removed
