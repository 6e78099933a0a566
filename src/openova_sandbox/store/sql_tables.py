"""Tables of a component of its own on the store's database: one lifecycle for them all.

The access tokens and quota overrides (:mod:`.sql_accounts`), console sessions
(:mod:`.sql_oidc_sessions`), the audit log (:mod:`.sql_audit`) and the gateway ledger
(:mod:`.sql_ledger`) each keep tables on the same database as the Sandbox store. They
share what :class:`MigratedTables` does: parse the URL, start the engine lazily (the
schema brought to the latest migration under the migration lock, with the usual retry),
report where it is without the password, close once, and run a read or a write
transaction (SQLite's writers queued here rather than in its busy timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .sql_engine import create_engine, migrate, migration_lock, parse_url, safe_url
from .sql_retry import EngineCalls

log = structlog.get_logger(__name__)
T = TypeVar("T")


class MigratedTables(EngineCalls):
    """A lazily started engine on ``url`` whose schema is migrated at start.

    ``name`` prefixes the component's log events (``<name>.started``) and retry actions.
    Subclasses that keep more (a direct SQLite connection for a hot path) add it in
    :meth:`_opened` and let it go in :meth:`_closing`.
    """

    def __init__(self, url: str, *, name: str, call_timeout: float = 5.0, echo: bool = False):
        self._url = parse_url(url)
        self._name = name
        self._budget = call_timeout
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False
        # SQLite takes one writer at a time: queue them here, not in its busy timeout
        self._sqlite = self._url.get_backend_name() == "sqlite"
        self._write_lock = asyncio.Lock()

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
                await self._attempts(f"{self._name}.migrate", engine, self._migrate)
            except BaseException:
                await engine.dispose()
                raise
            await self._opened()
            self._engine = engine
            log.info(f"{self._name}.started", backend=self._url.get_backend_name(), url=self.url)

    async def close(self) -> None:
        self._closed = True
        async with self._start_lock:
            engine, self._engine = self._engine, None
            await self._closing()
            if engine is not None:
                await engine.dispose()

    async def _opened(self) -> None:
        """Started (schema migrated), before the engine is handed out."""

    async def _closing(self) -> None:
        """Closing: let go of what :meth:`_opened` took."""

    async def _migrate(self, engine: AsyncEngine) -> None:
        async with migration_lock(), engine.connect() as connection:
            connection = await connection.execution_options(sqlite_begin="immediate")
            await connection.run_sync(migrate)
            await connection.commit()

    async def _read(self, action: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async def run(engine: AsyncEngine) -> T:
            async with engine.connect() as connection:
                return await work(connection)

        return await self._call(action, run)

    async def _write(self, action: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """One write transaction: committed when ``work`` returns, rolled back when it
        raises."""

        async def run(engine: AsyncEngine) -> T:
            async with engine.connect() as connection:
                connection = await connection.execution_options(sqlite_begin="immediate")
                async with connection.begin():
                    return await work(connection)

        if self._sqlite:
            async with self._write_lock:
                return await self._call(action, run)
        return await self._call(action, run)
