"""What only the SQL backends promise: durability, migrations, polling across processes,
and the error mapping / retry / time budget when the database is unreachable.

Runs against SQLite (a file in ``tmp_path``) and a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from openova_sandbox.domain.errors import BackendUnavailable
from openova_sandbox.domain.model import Sandbox, SandboxStatus
from openova_sandbox.store.sql import SqlStore

if TYPE_CHECKING:
    from conftest import StoreFactory
from support.postgres import PostgresServer, PostgresUnavailable, free_port, skip_or_fail

MakeSandbox = Callable[..., Sandbox]
UNAVAILABLE = "sandbox backend temporarily unavailable"


def assert_unavailable(error: BackendUnavailable) -> None:
    assert error.code == "sandbox-backend-unavailable"
    assert error.detail == UNAVAILABLE
    assert error.retry_after == 30


# --- durability -----------------------------------------------------------------------


async def test_close_and_reopen_keeps_everything(
    sql_store_factory: StoreFactory, make_sandbox: MakeSandbox
) -> None:
    store = await sql_store_factory.open()
    created = await store.create(make_sandbox("alpha", finalizers=("x/y",), labels={"a": "1"}))
    status = await store.update_status(created.with_status(SandboxStatus(phase="Ready")))
    marked = await store.delete("team-a", "alpha")
    await store.close()

    reopened = await sql_store_factory.open()
    assert await reopened.get("team-a", "alpha") == marked
    assert marked is not None and marked.status == status.status
    # the counter continues where it stopped
    later = await reopened.create(make_sandbox("beta"))
    assert int(later.metadata.resource_version) > int(marked.metadata.resource_version)
    # and history is still there to resume from
    watch = reopened.watch(created.metadata.resource_version)
    try:
        async with asyncio.timeout(10):
            types = [(await anext(watch)).type for _ in range(3)]
        assert types == ["MODIFIED", "MODIFIED", "ADDED"]
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from openova_sandbox.domain.model import ObjectMeta, Sandbox, SandboxSpec, SandboxStatus
    from openova_sandbox.store.sql import SqlStore

    async def main() -> None:
        store = SqlStore(sys.argv[1])
        await store.start()
        sandbox = Sandbox(
            ObjectMeta(name="survivor", namespace="team-a"), SandboxSpec("dev@acme.com", "acme")
        )
        created = await store.create(sandbox)
        # on SQLite a status write is not fsynced (synchronous=NORMAL): it must still
        # survive the process dying, as every write does
        ready = await store.update_status(created.with_status(SandboxStatus(phase="Ready")))
        sys.stdout.write(created.metadata.uid + " " + ready.metadata.resource_version + "\\n")
        sys.stdout.flush()
        os._exit(0)  # no close, no dispose, no checkpoint: as abrupt as it gets

    asyncio.run(main())
    """
)


async def test_a_returned_create_and_status_survive_a_crash(
    sql_store_factory: StoreFactory,
) -> None:
    assert sql_store_factory.url is not None
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASH_SCRIPT,
        sql_store_factory.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    uid, version = out.decode().strip().splitlines()[-1].split()

    store = await sql_store_factory.open()
    survivor = await store.get("team-a", "survivor")
    assert survivor.metadata.uid == uid
    assert survivor.status.phase == "Ready"
    assert survivor.metadata.resource_version == version


async def test_another_process_changes_are_seen_by_polling(
    sql_store_factory: StoreFactory, make_sandbox: MakeSandbox
) -> None:
    # Two stores on one database share no in-process signal: only polling connects them.
    writer = await sql_store_factory.open()
    reader = await sql_store_factory.open(poll_interval=0.2)
    existing = await writer.create(make_sandbox("zero"))
    watch = reader.watch()
    try:
        async with asyncio.timeout(10):
            listed = await anext(watch)
        # the initial listing is delivered: the reader now follows changes, and only its
        # polling can tell it of the writer's next create
        assert (listed.type, listed.object) == ("ADDED", existing)
        created = await writer.create(make_sandbox("alpha"))
        async with asyncio.timeout(10):
            event = await anext(watch)
        assert (event.type, event.object) == ("ADDED", created)
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


# --- schema and SQLite settings -------------------------------------------------------


async def test_start_is_idempotent_and_concurrent_first_starts_agree(
    sql_store_factory: StoreFactory, make_sandbox: MakeSandbox
) -> None:
    stores = [await sql_store_factory.open(start=False) for _ in range(3)]
    await asyncio.gather(*(s.start() for s in stores))
    await stores[0].start()
    created = await stores[0].create(make_sandbox("alpha"))
    for store in stores[1:]:
        assert await store.get("team-a", "alpha") == created


async def test_sqlite_file_settings(tmp_path: Path, make_sandbox: MakeSandbox) -> None:
    path = tmp_path / "not" / "yet" / "there" / "sandbox.db"
    store = SqlStore(f"sqlite:///{path}", retain_events=3)  # plain spelling is accepted
    await store.start()
    try:
        async with store._engine.connect() as connection:  # type: ignore[union-attr]
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "synchronous": 2,  # FULL
            "foreign_keys": 1,
            "busy_timeout": 4000,
        }
        current = await store.create(make_sandbox("alpha"))
        for i in range(6):
            updated = await store.update(current.with_meta(labels={"i": str(i)}))
            assert updated is not None
            current = updated
    finally:
        await store.close()
    assert path.exists()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # compaction keeps only the retained window of the change log
        assert raw.execute("SELECT count(*) FROM sandbox_events").fetchone()[0] == 3
        assert raw.execute("SELECT version_num FROM sandbox_alembic_version").fetchone()[0]
    raw.close()


# --- unavailable backends -------------------------------------------------------------


async def test_unreachable_postgres_is_backend_unavailable() -> None:
    store = SqlStore(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing")
    with pytest.raises(BackendUnavailable) as caught:
        await store.start()
    assert_unavailable(caught.value)
    with pytest.raises(BackendUnavailable) as caught:
        await store.ping()
    assert_unavailable(caught.value)
    await store.close()


async def test_unopenable_sqlite_is_backend_unavailable(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}")  # a directory, not a file
    with pytest.raises(BackendUnavailable) as caught:
        await store.get("team-a", "alpha")
    assert_unavailable(caught.value)
    await store.close()
    # aiosqlite stops the worker thread of a failed connect without awaiting it; give the
    # thread its moment so it does not post to a closed event loop after the test.
    await asyncio.sleep(0.2)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that completes TCP handshakes and then never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


@pytest.mark.slow
async def test_a_silent_server_fails_within_the_budget(silent_server: int) -> None:
    store = SqlStore(f"postgresql+asyncpg://postgres@127.0.0.1:{silent_server}/db")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await store.ping()
    elapsed = time.monotonic() - started
    assert_unavailable(caught.value)
    # two attempts of 5 s each (the retry is on fresh connections), never the driver's
    # own 60 s connect timeout
    assert 9.5 <= elapsed < 20, elapsed
    await store.close()


async def test_budget_is_configurable(silent_server: int) -> None:
    store = SqlStore(
        f"postgresql+asyncpg://postgres@127.0.0.1:{silent_server}/db", call_timeout=0.5
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await store.ping()
    assert time.monotonic() - started < 8
    await store.close()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A dedicated server this test may stop and start (the shared one stays up)."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        skip_or_fail(str(exc))
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.postgres
async def test_postgres_stopped_mid_run_then_back(
    own_postgres: PostgresServer, make_sandbox: MakeSandbox
) -> None:
    url = own_postgres.create_database("midrun")
    store = SqlStore(url, poll_interval=0.2)
    await store.start()
    try:
        created = await store.create(make_sandbox("alpha"))
        watch = store.watch(created.metadata.resource_version)
        pending = asyncio.create_task(anext(watch))
        await asyncio.sleep(0.3)

        await asyncio.to_thread(own_postgres.stop)
        for call in (
            store.ping(),
            store.get("team-a", "alpha"),
            store.list(),
            store.create(make_sandbox("beta")),
            store.update(created.with_meta(labels={"x": "1"})),
            store.delete("team-a", "alpha"),
        ):
            with pytest.raises(BackendUnavailable) as caught:
                await call
            assert_unavailable(caught.value)
        # a watcher's poll fails the same way; the caller re-watches from its cursor
        with pytest.raises(BackendUnavailable):
            async with asyncio.timeout(30):
                await pending

        await asyncio.to_thread(own_postgres.start)
        assert await store.get("team-a", "alpha") == created
        updated = await store.update(created.with_meta(labels={"x": "1"}))
        assert updated is not None
        resumed = store.watch(created.metadata.resource_version)
        async with asyncio.timeout(10):
            event = await anext(resumed)
        assert (event.type, event.object) == ("MODIFIED", updated)
        await resumed.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_a_watcher_sees_another_process_write_between_two_of_its_own(
    sql_store_factory: StoreFactory, make_sandbox: MakeSandbox
) -> None:
    # the store hands its own newest commits to its watchers from memory; a version
    # another process wrote in between must still come, from the table, in order
    here = await sql_store_factory.open(poll_interval=0.2)
    there = await sql_store_factory.open()
    start = await here.create(make_sandbox("zero"))
    watch = here.watch(start.metadata.resource_version)
    try:
        one = await here.create(make_sandbox("one"))
        two = await there.create(make_sandbox("two"))
        three = await here.create(make_sandbox("three"))
        async with asyncio.timeout(10):
            seen = [await anext(watch) for _ in range(3)]
        assert [(e.type, e.object) for e in seen] == [
            ("ADDED", one),
            ("ADDED", two),
            ("ADDED", three),
        ]
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_a_watcher_caught_up_with_this_process_reads_the_table_only_at_its_polls(
    sql_store_factory: StoreFactory, make_sandbox: MakeSandbox
) -> None:
    # issue 11: after taking this process's commits from memory a watcher used to read
    # the table once more on every wake-up, twice per create with two watchers
    store = await sql_store_factory.open(poll_interval=1.0)
    start = await store.create(make_sandbox("start"))
    reads = 0
    real = store._events_after

    async def counting(cursor: int) -> object:
        nonlocal reads
        reads += 1
        return await real(cursor)

    store._events_after = counting  # type: ignore[method-assign]
    watch = store.watch(start.metadata.resource_version)
    received: asyncio.Queue[object] = asyncio.Queue()

    async def consume() -> None:
        # like the informer: take each event, then wait for the next one at once
        while True:
            received.put_nowait((await anext(watch)).object)

    consumer = asyncio.create_task(consume())
    try:
        began = time.monotonic()
        async with asyncio.timeout(10):
            for i in range(20):
                made = await store.create(make_sandbox(f"s{i:02d}"))
                assert await received.get() == made  # the watcher caught up again
        polls = int(time.monotonic() - began)  # poll_interval=1.0
        # one read when the watch began (its cursor is not this process's newest
        # commit yet), and one a poll after that: not one a create
        assert reads <= 2 + polls < 20, (reads, polls)
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await watch.aclose()  # type: ignore[attr-defined]
