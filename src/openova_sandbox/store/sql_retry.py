"""The per-call rule of the SQL store: a time budget, one retry on fresh connections.

Each attempt runs under ``asyncio.timeout(budget)``. A transient failure (see
``sql_errors``) on the first attempt disposes the engine's pool - connections to a
server that went away are not reused - and the call runs once more with a new budget.
Whatever still fails becomes ``BackendUnavailable``; the store's own errors (NotFound,
Conflict, ...) pass through untouched, and so do bugs that are not database errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from ..domain.errors import BackendUnavailable, SandboxError
from .sql_errors import describe, is_database_error, is_transient

log = structlog.get_logger(__name__)

T = TypeVar("T")
UNAVAILABLE = "sandbox backend temporarily unavailable"
DISPOSE_SECONDS = 1.0


async def run_with_retry(
    action: str,
    engine: AsyncEngine,
    work: Callable[[AsyncEngine], Awaitable[T]],
    *,
    budget: float,
    retry: Callable[[], bool],
) -> T:
    """Run ``work``; ``retry()`` says whether a second attempt is still wanted."""

    async def fresh() -> None:
        await recycle(engine)

    return await retrying(action, lambda: work(engine), budget=budget, retry=retry, fresh=fresh)


async def retrying(
    action: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    budget: float,
    retry: Callable[[], bool],
    fresh: Callable[[], Awaitable[None]],
) -> T:
    """The rule itself, for any connections: ``fresh()`` replaces them before the
    second attempt."""
    for number in (1, 2):
        try:
            async with asyncio.timeout(budget):
                return await attempt()
        except SandboxError:
            raise
        except Exception as exc:
            if not is_database_error(exc):
                raise
            transient = is_transient(exc)
            if number == 1 and transient and retry():
                log.warning("store.retrying", action=action, error=describe(exc))
                await fresh()
                continue
            log.error("store.unavailable", action=action, error=describe(exc), transient=transient)
            raise BackendUnavailable(UNAVAILABLE) from exc
    raise AssertionError("unreachable")


async def recycle(engine: AsyncEngine) -> None:
    """Drop pooled connections so the next attempt opens new ones."""
    try:
        async with asyncio.timeout(DISPOSE_SECONDS):
            await engine.dispose()
    except Exception as exc:  # closing connections to a dead server can hang or fail
        log.warning("store.recycle_failed", error=describe(exc))
        await engine.dispose(close=False)


class EngineCalls:
    """What the SQL store and the SQL ledger share: a lazily started engine, and every
    call run with one budget and one retry on a fresh connection, refused once closed.
    The subclass creates ``_engine`` in ``start`` and sets ``_closed`` in ``close``."""

    _engine: AsyncEngine | None
    _closed: bool
    _budget: float

    async def start(self) -> None:
        raise NotImplementedError

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
