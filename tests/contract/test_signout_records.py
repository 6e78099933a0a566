"""Token cookies' sign-outs on the store's database (store/sql_signouts.py, migration 0007)
and the service over it (auth/signouts.py), on SQLite and PostgreSQL (a real server):
what a new process over the same database loads, what expires, what a failed write and
an unreachable database at start do, and the migration from a database at 0006. Two
handles on one database stand for two processes (a restart, or two API replicas)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, insert, text

from openova_sandbox.auth import signouts as signouts_module
from openova_sandbox.auth.signouts import NOT_LOADED, NOT_RECORDED, SignOuts
from openova_sandbox.domain.errors import BackendUnavailable
from openova_sandbox.store.sql_engine import create_engine, parse_url
from openova_sandbox.store.sql_signouts import SqlSignOutBackend
from support.migrations import tables, to
from support.postgres import fresh_database
from support.sql_faults import refuse_signout_inserts
from support.waiting import until

SQL = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=SQL)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}"
    return await fresh_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def open_signouts(database: str) -> AsyncIterator[Callable[..., Awaitable[SignOuts]]]:
    """``open(clock)``: a started :class:`SignOuts` on ``database`` (a new process)."""
    opened: list[SignOuts] = []

    async def open_one(clock: Clock) -> SignOuts:
        signouts = SignOuts(clock, backend=SqlSignOutBackend(database))
        await signouts.start()
        opened.append(signouts)
        return signouts

    yield open_one
    for signouts in reversed(opened):
        await signouts.stop()


async def rows(database: str) -> list[tuple[Any, ...]]:
    engine = create_engine(parse_url(database), echo=False, connect_timeout=5)
    try:
        async with engine.connect() as connection:
            found = await connection.execute(
                text("SELECT sub, jti, expires_at FROM sandbox_signed_out_tokens ORDER BY sub, jti")
            )
            return [tuple(row) for row in found]
    finally:
        await engine.dispose()


async def test_a_sign_out_is_loaded_by_the_next_process_until_it_expires(
    open_signouts: Callable[..., Awaitable[SignOuts]], database: str
) -> None:
    clock = Clock(1_000_000.0)
    first = await open_signouts(clock)
    assert first.loaded and not first.ended("ada", "j1")
    await first.end("ada", "j1", 1_000_600)
    await first.end("ada", "j2", 1_000_100)
    await first.end("ada", "j1", 1_000_600)  # signed out of twice: one record
    await first.end("ada", "", 1_000_600)  # nothing to name it by: nothing kept
    await first.end("ada", "j0", 999_999)  # expired already: nothing kept

    # only what names the token, never the token itself
    kept = await rows(database)
    assert [(sub, jti) for sub, jti, _ in kept] == [("ada", "j1"), ("ada", "j2")]

    restarted = await open_signouts(clock)
    assert restarted.ended("ada", "j1") and restarted.ended("ada", "j2")
    assert not restarted.ended("ada", "j3") and not restarted.ended("bob", "j1")

    # later: j2 has expired; a process starting now neither loads nor keeps it
    clock.now = 1_000_100
    later = await open_signouts(clock)
    assert later.ended("ada", "j1") and not later.ended("ada", "j2")
    assert [(sub, jti) for sub, jti, _ in await rows(database)] == [("ada", "j1")]


async def test_each_write_removes_the_expired_records(database: str) -> None:
    backend = SqlSignOutBackend(database)
    try:
        await backend.add("ada", "old", 1_000, now=500)
        await backend.add("ada", "edge", 2_000, now=500)
        await backend.add("bob", "live", 3_000, now=2_000)  # old and edge expired by now
        assert [(sub, jti) for sub, jti, _ in await rows(database)] == [("bob", "live")]
        assert await backend.load(2_000, limit=10) == [("bob", "live", 3_000.0)]
        assert await backend.load(3_000, limit=10) == []  # expired: not loaded
        # the highest numbered row stays until a later write (the numbers never go
        # back), expired or not
        assert await backend.prune(3_000) == 0
        assert [(sub, jti) for sub, jti, _ in await rows(database)] == [("bob", "live")]
        await backend.add("cy", "next", 4_000, now=3_000)
        assert [(sub, jti) for sub, jti, _ in await rows(database)] == [("cy", "next")]
        assert await backend.latest() == 4
        assert await backend.since(2, limit=10) == [("cy", "next", 4_000.0, 4)]
    finally:
        await backend.close()


async def test_a_full_memory_loads_the_latest_to_expire(
    open_signouts: Callable[..., Awaitable[SignOuts]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signouts_module, "MAX_REMEMBERED", 2)
    clock = Clock(1_000.0)
    first = await open_signouts(clock)
    for jti, exp in (("a", 1_500), ("b", 1_200), ("c", 1_800)):
        await first.end("ada", jti, exp)
    # this process keeps two in memory; the database keeps all three
    assert [first.ended("ada", j) for j in "abc"] == [True, False, True]
    restarted = await open_signouts(clock)
    assert [restarted.ended("ada", j) for j in "abc"] == [True, False, True]


async def test_a_failed_write_is_an_error_and_the_token_stays_refused_here(
    open_signouts: Callable[..., Awaitable[SignOuts]], database: str
) -> None:
    """The database refuses the insert (a trigger raising): ``end`` raises, so the
    logout cannot answer that it is done; this process refuses the token all the
    same, and a new one does not know of it (nothing was recorded)."""
    clock = Clock(1_000.0)
    signouts = await open_signouts(clock)
    await refuse_signout_inserts(database)
    waiting = asyncio.ensure_future(signouts.wait("ada", "j1"))
    with pytest.raises(BackendUnavailable) as caught:
        await signouts.end("ada", "j1", 2_000)
    assert caught.value.detail == NOT_RECORDED
    assert signouts.ended("ada", "j1")
    async with asyncio.timeout(5):
        await waiting  # its live connections ended with it
    assert await rows(database) == []
    assert not (await open_signouts(clock)).ended("ada", "j1")


async def test_a_database_unreadable_at_start_refuses_token_cookies_until_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not loaded: a check of a token issued before this process started (or without
    ``iat``) is ``BackendUnavailable`` (a 503), never let in unchecked; one issued since
    is answered from this process's memory; loaded by the retries once the database can
    be opened."""
    monkeypatch.setattr(signouts_module, "LOAD_RETRY_SECONDS", 0.05)
    clock = Clock(1_000.0)
    path = tmp_path / "sandbox.db"
    earlier = SignOuts(clock, backend=SqlSignOutBackend(f"sqlite+aiosqlite:///{path}"))
    await earlier.start()
    await earlier.end("ada", "j1", 2_000)
    await earlier.stop()
    path.rename(tmp_path / "elsewhere.db")
    path.mkdir()  # a directory where the database was: it cannot be opened now

    signouts = SignOuts(clock, backend=SqlSignOutBackend(f"sqlite+aiosqlite:///{path}"))
    try:
        await signouts.start()
        assert not signouts.loaded
        for who in (("ada", "j1"), ("bob", "j9")):
            with pytest.raises(BackendUnavailable) as caught:
                signouts.ended(*who)  # no iat: it may be older than this process
            assert caught.value.detail == NOT_LOADED
            with pytest.raises(BackendUnavailable):
                signouts.ended(*who, 999.0)  # issued before this process started
        # issued since this process started: only a sign-out here could have ended it,
        # and this process remembers those (a sign-in on this server while its database
        # is down: the console still opens, with what needs no database)
        assert not signouts.ended("bob", "j9", 1_000.0)
        clock.now = 1_010.0
        with pytest.raises(BackendUnavailable):
            await signouts.end("bob", "j9", 2_000)  # cannot be recorded: a 503 ...
        assert signouts.ended("bob", "j9", 1_005.0)  # ... but refused here from now on
        with pytest.raises(BackendUnavailable):
            signouts.ended("ada", "j1", 999.0)
        path.rmdir()
        (tmp_path / "elsewhere.db").rename(path)
        async with asyncio.timeout(20):
            while not signouts.loaded:
                await asyncio.sleep(0.02)
        assert signouts.ended("ada", "j1") and signouts.ended("bob", "j9")
        assert not signouts.ended("cy", "j3")
    finally:
        await signouts.stop()


async def test_a_database_at_0006_is_brought_to_0007_and_back(database: str) -> None:
    """Migration 0007 on a database an older release left at 0006 (its rows kept), and
    its downgrade."""

    engine = create_engine(parse_url(database), echo=False, connect_timeout=5)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(to("0006"))
            await connection.execute(
                text(
                    "INSERT INTO sandbox_oidc_sessions (id_sha256, record, expires_at) "
                    "VALUES ('k', 'sealed', CURRENT_TIMESTAMP)"
                )
            )
        async with engine.connect() as connection:
            assert "sandbox_signed_out_tokens" not in await connection.run_sync(tables)
        signouts = SignOuts(Clock(1_000.0), backend=SqlSignOutBackend(database))
        await signouts.start()  # upgrades to head
        try:
            await signouts.end("ada", "j1", 2_000)
        finally:
            await signouts.stop()
        async with engine.connect() as connection:
            assert "sandbox_signed_out_tokens" in await connection.run_sync(tables)
            kept = await connection.execute(text("SELECT record FROM sandbox_oidc_sessions"))
            assert kept.scalar_one() == "sealed"
        async with engine.begin() as connection:
            await connection.run_sync(to("0006", down=True))
        async with engine.connect() as connection:
            found = await connection.run_sync(tables)
            assert "sandbox_signed_out_tokens" not in found
            assert "sandbox_oidc_sessions" in found
    finally:
        await engine.dispose()


async def test_the_table_holds_no_token(tmp_path: Path) -> None:
    """The columns are the ones that name a token: nowhere to put the token itself."""
    path = tmp_path / "schema.db"
    backend = SqlSignOutBackend(f"sqlite+aiosqlite:///{path}")
    await backend.start()
    await backend.close()
    with sqlite3.connect(path) as raw:
        columns = [row[1] for row in raw.execute("PRAGMA table_info(sandbox_signed_out_tokens)")]
    assert columns == ["sub", "jti", "expires_at", "recorded"]


async def test_a_sign_out_through_one_process_reaches_the_running_others(
    open_signouts: Callable[..., Awaitable[SignOuts]],
) -> None:
    """Two processes on one database (two API replicas), both running: a sign-out
    through either is known to the other within the poll interval (the real one, 2 s),
    and what waits on it there (a terminal opened with that cookie) is woken."""
    clock = Clock(1_000.0)
    first = await open_signouts(clock)
    second = await open_signouts(clock)
    assert not second.ended("ada", "j1") and not first.ended("bob", "j2")
    waiting = asyncio.ensure_future(second.wait("ada", "j1"))

    started = time.monotonic()
    await first.end("ada", "j1", 2_000)
    await first.end("ada", "gone", 1_000.5)  # expires before the other reads it
    clock.now = 1_001.0
    async with asyncio.timeout(signouts_module.POLL_SECONDS + 3):
        await waiting
    assert time.monotonic() - started < signouts_module.POLL_SECONDS + 3
    assert second.ended("ada", "j1") and not second.ended("ada", "gone")
    assert not second.ended("ada", "j3")

    await second.end("bob", "j2", 2_000)  # and the other way round
    assert await until("bob's sign-out read by the first", lambda: known(first, "bob", "j2"))
    # signed out of again through the first: numbered anew, read again, harmlessly
    await first.end("bob", "j2", 2_000)
    await first.end("cy", "j4", 2_000)
    assert await until("cy's sign-out read by the second", lambda: known(second, "cy", "j4"))
    assert second.ended("bob", "j2") and second.ended("ada", "j1")


async def known(signouts: SignOuts, sub: str, jti: str) -> bool:
    return signouts.known(sub, jti)


class Watched(SqlSignOutBackend):
    """The real backend, counting the reads of what was recorded since (and their
    failures)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads = 0
        self.failures = 0

    async def since(self, after: int, limit: int) -> list[tuple[str, str, float, int]]:
        try:
            found = await super().since(after, limit)
        except Exception:
            self.failures += 1
            raise
        self.reads += 1
        return found


async def test_a_read_that_fails_is_tried_again(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table cannot be read for a while (renamed away): each turn's read fails and
    the process keeps its loop; once the table is back, the next read brings what was
    recorded meanwhile."""
    monkeypatch.setattr(signouts_module, "POLL_SECONDS", 0.05)
    clock = Clock(1_000.0)
    first = SignOuts(clock, backend=SqlSignOutBackend(database))
    backend = Watched(database)
    second = SignOuts(clock, backend=backend)
    await first.start()
    await second.start()
    try:
        await until("a first read", lambda: answer(backend.reads > 0))
        await rename(database, "sandbox_signed_out_tokens", "sandbox_hidden")
        await until("two failed reads", lambda: answer(backend.failures >= 2))
        await rename(database, "sandbox_hidden", "sandbox_signed_out_tokens")
        waiting = asyncio.ensure_future(second.wait("ada", "j1"))
        await first.end("ada", "j1", 2_000)
        async with asyncio.timeout(30):
            await waiting
        assert second.ended("ada", "j1")
    finally:
        await second.stop()
        await first.stop()


async def answer(value: bool) -> bool:
    return value


async def rename(database: str, table: str, to_name: str) -> None:
    engine = create_engine(parse_url(database), echo=False, connect_timeout=5)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"ALTER TABLE {table} RENAME TO {to_name}"))
    finally:
        await engine.dispose()


async def test_without_a_backend_nothing_is_read() -> None:
    """``SANDBOX_STORE=memory``: no database, so no reads; the sign-outs are this
    process's."""
    signouts = SignOuts(Clock(1_000.0))
    await signouts.start()
    try:
        assert signouts.loaded
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "signouts-poll"]
        await signouts.end("ada", "j1", 2_000)
        assert signouts.ended("ada", "j1")
    finally:
        await signouts.stop()


# the table as migration 0007 left it
at_0007 = Table(
    "sandbox_signed_out_tokens",
    MetaData(),
    Column("sub", Text, primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


async def test_a_database_at_0007_with_sign_outs_is_numbered_and_followed(
    database: str,
) -> None:
    """Migration 0008 on a database an older release left at 0007 with sign-outs in it:
    they are kept (numbered 0) and loaded; a sign-out recorded after the upgrade is
    numbered 1 and read by a running process; the downgrade keeps the rows."""
    engine = create_engine(parse_url(database), echo=False, connect_timeout=5)
    live, expired = datetime.fromtimestamp(2_000, UTC), datetime.fromtimestamp(900, UTC)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(to("0007"))
            await connection.execute(
                insert(at_0007),
                [
                    {"sub": "ada", "jti": "old", "expires_at": live},
                    {"sub": "bob", "jti": "older", "expires_at": expired},
                ],
            )
        clock = Clock(1_000.0)
        first = SignOuts(clock, backend=SqlSignOutBackend(database))
        await first.start()  # upgrades to head
        second = SignOuts(clock, backend=SqlSignOutBackend(database))
        await second.start()
        try:
            assert first.ended("ada", "old") and second.ended("ada", "old")
            assert not second.ended("bob", "older")
            await first.end("cy", "new", 2_000)
            assert await until("cy's sign-out read", lambda: known(second, "cy", "new"))
        finally:
            await second.stop()
            await first.stop()
        async with engine.connect() as connection:
            found = await connection.execute(
                text("SELECT sub, jti, recorded FROM sandbox_signed_out_tokens ORDER BY sub")
            )
            # the expired one is removed (not the highest numbered), the others kept
            assert [tuple(row) for row in found] == [("ada", "old", 0), ("cy", "new", 1)]
        async with engine.begin() as connection:
            await connection.run_sync(to("0007", down=True))
        async with engine.connect() as connection:
            found = await connection.execute(
                text("SELECT sub, jti FROM sandbox_signed_out_tokens ORDER BY sub")
            )
            assert [tuple(row) for row in found] == [("ada", "old"), ("cy", "new")]
    finally:
        await engine.dispose()
