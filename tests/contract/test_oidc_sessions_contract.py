"""The console sessions' backends keep the same contract (auth/oidc_sessions.py,
store/sql_oidc_sessions.py): memory, SQLite and PostgreSQL (a real server). Two handles
on one SQL database stand for two API replicas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.auth.oidc_sessions import MemorySessionBackend
from openova_sandbox.store.sql_oidc_sessions import SqlSessionBackend
from support.backends import BACKENDS, backend_opener


@pytest.fixture(params=BACKENDS)
async def open_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Any]]:
    async with backend_opener(
        request, tmp_path, MemorySessionBackend(), SqlSessionBackend
    ) as open_one:
        yield open_one


async def test_put_get_replace_delete(open_backend) -> None:
    one = await open_backend()
    assert await one.get("k" * 64) is None
    await one.put("k" * 64, b"gAAAA-first", 2000.0)
    assert await one.get("k" * 64) == b"gAAAA-first"
    await one.put("k" * 64, b"gAAAA-second", 3000.0)  # a refresh rewrites the record
    other = await open_backend()  # another replica on the same database
    assert await other.get("k" * 64) == b"gAAAA-second"
    await other.delete("k" * 64)
    assert await one.get("k" * 64) is None
    await one.delete("k" * 64)  # deleting what is gone is fine


async def test_prune_removes_exactly_the_expired(open_backend) -> None:
    backend = await open_backend()
    await backend.put("a" * 64, b"old", 1000.0)
    await backend.put("b" * 64, b"edge", 2000.0)
    await backend.put("c" * 64, b"live", 3000.0)
    assert await backend.prune(2000.0) == 2
    assert await backend.get("a" * 64) is None and await backend.get("b" * 64) is None
    assert await backend.get("c" * 64) == b"live"
    assert await backend.prune(2000.0) == 0
