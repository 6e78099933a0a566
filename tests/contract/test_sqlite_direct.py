"""The SQL store's own SQLite connections (``store/sql_sqlite.py``): what they add to the
contract suite's SQLite runs.

- A database another connection holds locked makes a call wait on the event loop (not
  in SQLite's sleeping busy handler, not failing) and go through once the lock is gone;
  a lock held past the busy budget is ``BackendUnavailable`` after one retry.
- Rows written through these connections read back through SQLAlchemy (the migrations'
  engine, what an older server would read) and the other way round.
- A status write is ``synchronous=NORMAL``, every other write ``FULL``.
- A write's COMMIT (the WAL write and the fsync) runs in the committer thread: the
  event loop serves reads meanwhile (issue 11: a burst of creates stalled a neighbour's
  lists behind the fsyncs), and a COMMIT once started is waited for and its outcome
  returned, even when the call's budget runs out or the caller is cancelled meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
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
    real = sql_sqlite._commit

    def recording(connection: sqlite3.Connection) -> None:
        (level,) = connection.execute("PRAGMA synchronous").fetchone()
        used.append({1: "NORMAL", 2: "FULL"}[level])
        real(connection)

    monkeypatch.setattr(sql_sqlite, "_commit", recording)
    created = await store.create(_sandbox("alpha"))
    ready = await store.update_status(created.with_status(SandboxStatus(phase="Ready")))
    labelled = await store.update(ready.with_meta(labels={"a": "1"}))
    assert labelled is not None
    await store.delete("team-a", "alpha")
    assert used == ["FULL", "NORMAL", "FULL", "FULL"]


def _held_commits(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """COMMITs that wait for ``release`` (set by the test) once ``entered`` is set."""
    entered, release = threading.Event(), threading.Event()
    real = sql_sqlite._commit

    def held(connection: sqlite3.Connection) -> None:
        entered.set()
        release.wait(30)
        real(connection)

    monkeypatch.setattr(sql_sqlite, "_commit", held)
    return entered, release


async def test_the_loop_serves_reads_while_a_commit_runs(
    sqlite_store: tuple[SqlStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = sqlite_store
    alpha = await store.create(_sandbox("alpha"))
    entered, release = _held_commits(monkeypatch)
    creating = asyncio.create_task(store.create(_sandbox("beta")))
    try:
        assert await asyncio.to_thread(entered.wait, 10)
        # the COMMIT has not returned: the loop answers, and beta is not there yet
        assert await store.get("team-a", "alpha") == alpha
        assert [s.name for s in await store.list("team-a")] == ["alpha"]
        assert not creating.done()
    finally:
        release.set()
    async with asyncio.timeout(10):
        beta = await creating
    assert (await store.get("team-a", "beta")).metadata.uid == beta.metadata.uid


async def test_a_commit_past_the_budget_answers_its_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}")
    await store.start()  # the migrations under the usual budget (a loaded machine)
    store._budget = 0.2  # then every call's
    try:
        real = sql_sqlite._commit

        def slow_disk(connection: sqlite3.Connection) -> None:
            time.sleep(0.6)  # an fsync three budgets long
            real(connection)

        monkeypatch.setattr(sql_sqlite, "_commit", slow_disk)
        # the create is in the database: its caller is told so (a retry would have
        # answered "already exists" for its own sandbox)
        created = await store.create(_sandbox("alpha"))
        monkeypatch.setattr(sql_sqlite, "_commit", real)
        assert (await store.get("team-a", "alpha")).metadata.uid == created.metadata.uid
        assert [s.name for s in await store.list()] == ["alpha"]
    finally:
        await store.close()


async def test_a_caller_cancelled_during_its_commit_leaves_the_store_usable(
    sqlite_store: tuple[SqlStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = sqlite_store
    entered, release = _held_commits(monkeypatch)
    creating = asyncio.create_task(store.create(_sandbox("alpha")))
    assert await asyncio.to_thread(entered.wait, 10)
    creating.cancel()
    release.set()
    async with asyncio.timeout(10):
        created = await creating  # the COMMIT's outcome, not a cancellation
    assert (await store.get("team-a", "alpha")).metadata.uid == created.metadata.uid
    # the writer connection is out of its transaction: the next writes go through
    ready = await store.update_status(created.with_status(SandboxStatus(phase="Ready")))
    assert ready.status.phase == "Ready"
    assert (await store.create(_sandbox("beta"))).metadata.name == "beta"
