"""The SQL store's own SQLite connections (``store/sql_sqlite.py``): what they add to the
contract suite's SQLite runs.

- A database another connection holds locked makes a call wait on the event loop (not
  in SQLite's sleeping busy handler, not failing) and go through once the lock is gone;
  a lock held past the busy budget is ``BackendUnavailable`` after one retry.
- Rows written through these connections read back through SQLAlchemy (the migrations'
  engine, what an older server would read) and the other way round.
- A status write is ``synchronous=NORMAL``, every other write ``FULL``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from openova_sandbox.domain.errors import BackendUnavailable
from openova_sandbox.domain.model import ObjectMeta, Sandbox, SandboxSpec, SandboxStatus
from openova_sandbox.store import sql_sqlite
from openova_sandbox.store.sql import SqlStore
from openova_sandbox.store.sql_engine import create_engine, parse_url
from openova_sandbox.store.sql_queries import SaTx

MakeSandbox = Callable[..., Sandbox]


def _sandbox(name: str) -> Sandbox:
    return Sandbox(ObjectMeta(name=name, namespace="team-a"), SandboxSpec("dev@acme.com", "acme"))


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> tuple[SqlStore, Path]:
    path = tmp_path / "sandbox.db"
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.start()
    yield store, path  # type: ignore[misc]
    await store.close()


async def _until_waiting(task: asyncio.Task[object], lock_attempts: list[int]) -> None:
    """Until ``task`` has found the database locked at least twice (it is waiting)."""
    async with asyncio.timeout(10):
        while len(lock_attempts) < 2:
            assert not task.done(), task
            await asyncio.sleep(0)


async def test_a_locked_database_is_waited_for_on_the_loop(
    sqlite_store: tuple[SqlStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, path = sqlite_store
    created = await store.create(_sandbox("alpha"))
    seen: list[int] = []
    real = sql_sqlite.locked

    def counting(exc: sqlite3.Error) -> bool:
        answer = real(exc)
        if answer:
            seen.append(1)
        return answer

    monkeypatch.setattr(sql_sqlite, "locked", counting)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        write = asyncio.create_task(
            store.update_status(created.with_status(SandboxStatus(phase="Ready")))
        )
        durable = asyncio.create_task(store.create(_sandbox("beta")))
        await _until_waiting(write, seen)
        assert not durable.done()
        other.execute("COMMIT")
        async with asyncio.timeout(10):
            ready, beta = await write, await durable
    finally:
        other.close()
    assert ready.status.phase == "Ready"
    assert (await store.get("team-a", "beta")).metadata.uid == beta.metadata.uid


async def test_a_lock_held_past_the_budget_is_backend_unavailable(
    sqlite_store: tuple[SqlStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, path = sqlite_store
    monkeypatch.setattr(sql_sqlite, "SQLITE_BUSY_TIMEOUT_MS", 150)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(BackendUnavailable) as caught:
            await store.create(_sandbox("alpha"))
        assert caught.value.code == "sandbox-backend-unavailable"
        other.execute("ROLLBACK")
    finally:
        other.close()
    # the lock is gone: the same store writes again (fresh connections after the retry)
    assert (await store.create(_sandbox("alpha"))).metadata.name == "alpha"


async def test_rows_read_back_through_sqlalchemy_and_the_other_way(
    sqlite_store: tuple[SqlStore, Path],
) -> None:
    store, path = sqlite_store
    created = await store.create(_sandbox("alpha"))
    engine = create_engine(parse_url(f"sqlite+aiosqlite:///{path}"), echo=False, connect_timeout=5)
    try:
        async with engine.connect() as connection:

            def read(conn: Connection) -> object:
                return SaTx(conn).load("team-a", "alpha")

            found = await connection.run_sync(read)
        assert found is not None
        assert Sandbox.from_dict(found[0]) == created  # type: ignore[index]

        doc = dict(created.to_dict())
        doc["metadata"] = {**doc["metadata"], "name": "beta", "uid": "b" * 36}
        async with engine.connect() as connection:

            def write(conn: Connection) -> None:
                tx = SaTx(conn)
                version = tx.next_version()
                doc["metadata"]["resourceVersion"] = str(version)
                tx.insert_object(doc, version=version)
                tx.append_event("ADDED", doc, version=version, retain=10_000)
                conn.commit()

            await connection.run_sync(write)
    finally:
        await engine.dispose()
    beta = await store.get("team-a", "beta")
    assert beta.metadata.uid == "b" * 36
    assert [s.name for s in await store.list("team-a")] == ["beta", "alpha"]


async def test_status_writes_are_normal_and_the_rest_full(
    sqlite_store: tuple[SqlStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = sqlite_store
    used: list[str] = []
    real = sql_sqlite._transaction

    def recording(connection: sqlite3.Connection, work: object, *, write: bool) -> object:
        if write:
            (level,) = connection.execute("PRAGMA synchronous").fetchone()
            used.append({1: "NORMAL", 2: "FULL"}[level])
        return real(connection, work, write=write)  # type: ignore[arg-type]

    monkeypatch.setattr(sql_sqlite, "_transaction", recording)
    created = await store.create(_sandbox("alpha"))
    ready = await store.update_status(created.with_status(SandboxStatus(phase="Ready")))
    labelled = await store.update(ready.with_meta(labels={"a": "1"}))
    assert labelled is not None
    await store.delete("team-a", "alpha")
    assert used == ["FULL", "NORMAL", "FULL", "FULL"]
