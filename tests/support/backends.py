"""One small contract run against memory, SQLite and PostgreSQL (a fresh database on the
session's real server): a backend class for memory and another for SQL, opened as
handles on one location, as two API replicas would have them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from support.postgres import fresh_database

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@contextlib.asynccontextmanager
async def backend_opener(
    request: pytest.FixtureRequest, tmp_path: Path, memory: Any, sql: Callable[[str], Any]
) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
    """``open_one()`` for the backend ``request.param`` names (a fixture parametrized
    over :data:`BACKENDS`): ``memory`` itself each time, else a new ``sql(url)`` on one
    SQLite file or one fresh PostgreSQL database; each started, all closed at the end."""
    url: str | None = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}"
    elif request.param == "postgres":
        url = await fresh_database(request.getfixturevalue("postgres_url"))
    opened: list[Any] = []

    async def open_one() -> Any:
        backend = memory if url is None else sql(url)
        await backend.start()
        opened.append(backend)
        return backend

    try:
        yield open_one
    finally:
        for backend in reversed(opened):
            await backend.close()
