"""The sandbox secrets' backends keep one contract (services/sandbox_secrets.py,
store/sql_secrets.py): memory, SQLite and PostgreSQL (a real server). Two handles on one
SQL database stand for two API replicas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.services.sandbox_secrets import MemorySecretBackend
from openova_sandbox.store.sql_secrets import SqlSecretBackend
from support.backends import BACKENDS, backend_opener


@pytest.fixture(params=BACKENDS)
async def open_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Any]]:
    async with backend_opener(
        request, tmp_path, MemorySecretBackend(), SqlSecretBackend
    ) as open_one:
        yield open_one


async def test_put_get_replace_list(open_backend) -> None:
    one = await open_backend()
    assert await one.get("uid-a", "TOKEN") is None
    assert await one.put("uid-a", "TOKEN", "sealed-1", 5, now=1000.0, max_count=10)
    assert await one.put("uid-a", "API_KEY", "sealed-2", 7, now=1001.0, max_count=10)
    other = await open_backend()  # another replica on the same database
    assert await other.put("uid-a", "TOKEN", "sealed-3", 9, now=2000.5, max_count=10)
    row = await one.get("uid-a", "TOKEN")
    assert row is not None
    assert (row.sealed, row.size, row.created_at, row.updated_at) == ("sealed-3", 9, 1000.0, 2000.5)
    assert [r.name for r in await one.list("uid-a")] == ["API_KEY", "TOKEN"]  # by name
    assert "sealed" not in repr(row)


async def test_sandboxes_are_apart(open_backend) -> None:
    one = await open_backend()
    await one.put("uid-a", "TOKEN", "a", 1, now=10.0, max_count=10)
    await one.put("uid-b", "TOKEN", "b", 1, now=20.0, max_count=10)
    await one.put("uid-b", "OTHER", "b2", 2, now=15.0, max_count=10)
    assert [r.sealed for r in await one.list("uid-a")] == ["a"]
    assert (await one.get("uid-b", "TOKEN")).sealed == "b"
    assert await one.sandboxes() == {"uid-a": 10.0, "uid-b": 15.0}  # oldest per sandbox
    assert await one.delete_sandbox("uid-b") == 2
    assert await one.list("uid-b") == []
    assert await one.get("uid-a", "TOKEN") is not None
    assert await one.sandboxes() == {"uid-a": 10.0}
    assert await one.delete_sandbox("uid-b") == 0  # deleting what is gone is fine


async def test_count_limit_refuses_new_names_only(open_backend) -> None:
    one = await open_backend()
    assert await one.put("uid-a", "ONE", "1", 1, now=1.0, max_count=2)
    assert await one.put("uid-a", "TWO", "2", 1, now=1.0, max_count=2)
    assert not await one.put("uid-a", "THREE", "3", 1, now=1.0, max_count=2)
    assert await one.get("uid-a", "THREE") is None
    assert await one.put("uid-a", "TWO", "2b", 2, now=2.0, max_count=2)  # a replace is fine
    assert await one.put("uid-b", "THREE", "3", 1, now=1.0, max_count=2)  # per sandbox
