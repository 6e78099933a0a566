"""The audit log's rules (services/audit.py, store/sql_audit.py) on every backend: in
memory, SQLite (a file in ``tmp_path``) and a real PostgreSQL server.

``logs.open()`` gives a new handle on the same records (SQL: a second engine on the same
database, as a second replica would have). The concurrency tests write from several
handles at once, and from several processes, and then check that each org's chain is
one line: dense numbers, every link right, nothing lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.domain.audit import GENESIS, AuditEntry, AuditQuery, chain, entry_of
from openova_sandbox.domain.errors import BackendUnavailable, Invalid
from openova_sandbox.domain.principal import Principal
from openova_sandbox.services.audit import AuditLog, MemoryAuditStore
from openova_sandbox.store import sql_sqlite
from openova_sandbox.store.sql_audit import SqlAuditStore
from support.postgres import fresh_database

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
SQL_BACKENDS = BACKENDS[1:]

ADMIN = Principal(
    sub="sub-admin", email="Admin@Acme.com", org="acme", roles=frozenset({"org-admin"})
)
DEV = Principal(sub="sub-dev", email="dev@acme.com", org="acme")
OTHER = Principal(sub="sub-x", email="x@globex.com", org="globex")
START = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
SRC = Path(__file__).resolve().parents[2] / "src"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class Logs:
    def __init__(self, backend: str, url: str | None) -> None:
        self.backend = backend
        self.url = url
        self.clock = Clock()
        self._memory: MemoryAuditStore | None = None
        self._opened: list[AuditLog] = []

    async def open(self) -> AuditLog:
        if self.url is None:
            self._memory = self._memory or MemoryAuditStore()
            log = AuditLog(self._memory, clock=self.clock)
        else:
            log = AuditLog(SqlAuditStore(self.url), clock=self.clock)
        await log.start()
        self._opened.append(log)
        return log

    async def close_all(self) -> None:
        for log in reversed(self._opened):
            await log.stop()


async def _logs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Logs]:
    url: str | None = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'sandbox.db'}"
    elif request.param == "postgres":
        url = await fresh_database(request.getfixturevalue("postgres_url"))
    opened = Logs(request.param, url)
    yield opened
    await opened.close_all()


@pytest.fixture(params=BACKENDS)
async def logs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Logs]:
    async for opened in _logs(request, tmp_path):
        yield opened


@pytest.fixture(params=SQL_BACKENDS)
async def sql_logs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Logs]:
    async for opened in _logs(request, tmp_path):
        yield opened


async def test_records_chain_per_org_and_verify(logs: Logs) -> None:
    log = await logs.open()
    first = await log.record("sandbox.create", DEV, target="sandbox/a", client="10.0.0.7")
    second = await log.record("sandbox.delete", ADMIN, target="sandbox/a", client="10.0.0.8")
    theirs = await log.record("sandbox.create", OTHER, target="sandbox/b")
    assert first is not None and second is not None and theirs is not None
    assert (first.org, first.seq, first.prev) == ("acme", 1, GENESIS)
    assert (second.seq, second.prev) == (2, first.hash)
    assert (theirs.org, theirs.seq, theirs.prev) == ("globex", 1, GENESIS)
    assert first.client == "10.0.0.7" and first.actor_email == "dev@acme.com"

    reports = {r.org: r for r in await log.verify()}
    assert set(reports) == {"acme", "globex"}
    assert reports["acme"].ok and reports["acme"].records == 2
    assert (reports["acme"].head_seq, reports["acme"].head_hash) == (2, second.hash)

    # a second handle (another replica) reads the same chain, byte for byte
    again = await logs.open()
    (newest, older) = await again.query(AuditQuery(org="acme"))
    assert newest == second and older == first


async def test_detail_keeps_plain_facts_and_never_a_secret(logs: Logs) -> None:
    log = await logs.open()
    record = await log.record(
        "token.create",
        DEV,
        target="token/t1",
        detail={
            "name": "ci",
            "expiresInDays": 30,
            "token": "sat_live_secret",
            "refresh_token": "r",
            "apiKey": "k",
            "Password": "p",
            "ratio": 0.5,
            "nested": {"a": 1},
            "name\ud800": "x\ud800",
        },
    )
    assert record is not None
    assert record.detail == {
        "name": "ci",
        "expiresInDays": 30,
        "ratio": 0.5,
        "nested": "{'a': 1}",
        "name?": "x?",
    }
    (stored,) = await (await logs.open()).query(AuditQuery(org="acme"))
    assert stored == record
    assert all(r.ok for r in await log.verify())


async def test_filters_and_cursor_pages(logs: Logs) -> None:
    log = await logs.open()
    for i in range(7):
        actor = DEV if i % 2 == 0 else ADMIN
        action = "sandbox.create" if i < 4 else "terminal.attach"
        await log.record(action, actor, target=f"sandbox/s{i}")
    await log.record("sandbox.create", OTHER, target="sandbox/theirs")

    everything = await log.query(AuditQuery(org="acme"))
    assert [r.seq for r in everything] == [7, 6, 5, 4, 3, 2, 1]
    assert all(r.org == "acme" for r in everything)

    by_email = await log.query(AuditQuery(org="acme", actor="ADMIN@acme.com"))
    assert [r.seq for r in by_email] == [6, 4, 2]
    by_sub = await log.query(AuditQuery(org="acme", actor="sub-dev"))
    assert [r.seq for r in by_sub] == [7, 5, 3, 1]
    exact = await log.query(AuditQuery(org="acme", action="terminal.attach"))
    assert [r.seq for r in exact] == [7, 6, 5]
    prefix = await log.query(AuditQuery(org="acme", action="sandbox.*"))
    assert [r.seq for r in prefix] == [4, 3, 2, 1]
    none = await log.query(AuditQuery(org="acme", action="sandbox.cr"))
    assert none == []

    # times: since inclusive, until exclusive (the clock ticks one second a record)
    third, fifth = everything[4], everything[2]
    window = await log.query(AuditQuery(org="acme", since=third.at, until=fifth.at))
    assert [r.seq for r in window] == [4, 3]

    page1 = await log.query(AuditQuery(org="acme", limit=3))
    page2 = await log.query(AuditQuery(org="acme", limit=3, before=page1[-1].seq))
    page3 = await log.query(AuditQuery(org="acme", limit=3, before=page2[-1].seq))
    assert [[r.seq for r in p] for p in (page1, page2, page3)] == [[7, 6, 5], [4, 3, 2], [1]]
    oldest_first = await log.query(AuditQuery(org="acme", newest_first=False, after=5))
    assert [r.seq for r in oldest_first] == [6, 7]


def test_queries_refuse_what_they_cannot_answer() -> None:
    with pytest.raises(Invalid, match="limit"):
        AuditQuery(org="acme", limit=0)
    with pytest.raises(Invalid, match="limit"):
        AuditQuery(org="acme", limit=501)
    with pytest.raises(Invalid, match="dotted name"):
        AuditQuery(org="acme", action="sandbox.%")
    with pytest.raises(Invalid, match="since is after until"):
        AuditQuery(org="acme", since=START, until=START - timedelta(seconds=1))


async def test_concurrent_writers_keep_each_chain_linear(logs: Logs) -> None:
    """Three handles (three replicas on SQL) append 40 records each to one org at once,
    and 20 to another: every append lands, numbers are dense and every link holds."""
    handles = [await logs.open() for _ in range(3)]

    async def writer(log: AuditLog, n: int, actor: Principal) -> list[Any]:
        return [
            await log.record("terminal.attach", actor, target=f"sandbox/{n}-{i}")
            for i in range(40 if actor is DEV else 20)
        ]

    results = await asyncio.gather(
        *(writer(h, n, DEV) for n, h in enumerate(handles)),
        writer(handles[0], 9, OTHER),
    )
    written = [r for batch in results for r in batch]
    assert None not in written, "an append was lost"
    acme = sorted(r.seq for r in written if r.org == "acme")
    assert acme == list(range(1, 121))
    reports = {r.org: r for r in await handles[1].verify()}
    assert reports["acme"].ok and reports["acme"].records == 120
    assert reports["globex"].ok and reports["globex"].records == 20


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from openova_sandbox.domain.principal import Principal
    from openova_sandbox.services.audit import AuditLog
    from openova_sandbox.store.sql_audit import SqlAuditStore

    async def main(url, name, count):
        log = AuditLog(SqlAuditStore(url))
        await log.start()
        actor = Principal(sub=name, email=name + "@acme.com", org="acme")
        lost = 0
        for i in range(count):
            if await log.record("sandbox.create", actor, target=f"sandbox/{name}-{i}") is None:
                lost += 1
        await log.stop()
        print(lost)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.mark.slow
async def test_writers_in_separate_processes_keep_the_chain_linear(sql_logs: Logs) -> None:
    assert sql_logs.url is not None
    log = await sql_logs.open()  # migrated before the writers start
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WRITER,
            sql_logs.url,
            f"w{n}",
            "60",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for n in range(4)
    ]
    outs = [await p.communicate() for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
        assert out.decode().split()[-1] == "0", (out + err).decode()[-2000:]  # none lost
    (report,) = await log.verify(["acme"])
    assert report.ok, report.reason
    assert report.records == 240 and report.head_seq == 240
    targets = {r.target for r in await _all(log)}
    assert len(targets) == 240


async def _all(log: AuditLog) -> list[Any]:
    found, before = [], None
    while True:
        page = await log.query(AuditQuery(org="acme", limit=500, before=before))
        found += page
        if len(page) < 500:
            return found
        before = page[-1].seq


# --- tampering ---------------------------------------------------------------------------


def _tamper(url: str, *statements: str) -> None:
    """Change rows as someone with database access would: around the triggers."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        with sqlite3.connect(path) as db:
            db.execute("DROP TRIGGER sandbox_audit_no_update")
            db.execute("DROP TRIGGER sandbox_audit_no_delete")
            for statement in statements:
                db.execute(statement)
        return
    import asyncpg

    async def run() -> None:
        db = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await db.execute("ALTER TABLE sandbox_audit DISABLE TRIGGER sandbox_audit_append_only")
            for statement in statements:
                await db.execute(statement)
        finally:
            await db.close()

    _run_elsewhere(run)


def _run_elsewhere(run: Any) -> None:
    import threading

    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


async def _five(log: AuditLog) -> None:
    for i in range(5):
        await log.record("sandbox.create", DEV, target=f"sandbox/s{i}")


async def test_the_table_refuses_updates_and_deletes(sql_logs: Logs) -> None:
    log = await sql_logs.open()
    await _five(log)
    assert sql_logs.url is not None
    if sql_logs.backend == "sqlite":
        path = sql_logs.url.split("///", 1)[1]
        with sqlite3.connect(path) as db:
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute("UPDATE sandbox_audit SET target = 'x'")
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute("DELETE FROM sandbox_audit")
    else:
        import asyncpg

        async def run() -> None:
            db = await asyncpg.connect(sql_logs.url.replace("postgresql+asyncpg", "postgresql"))  # type: ignore[union-attr]
            try:
                for statement in (
                    "UPDATE sandbox_audit SET target = 'x'",
                    "DELETE FROM sandbox_audit",
                ):
                    with pytest.raises(asyncpg.RaiseError, match="append-only"):
                        await db.execute(statement)
            finally:
                await db.close()

        _run_elsewhere(run)
    (report,) = await log.verify()
    assert report.ok and report.records == 5


async def test_verify_finds_the_first_changed_record(sql_logs: Logs) -> None:
    log = await sql_logs.open()
    await _five(log)
    assert sql_logs.url is not None
    _tamper(sql_logs.url, "UPDATE sandbox_audit SET target = 'sandbox/other' WHERE seq = 3")
    (report,) = await log.verify()
    assert not report.ok
    assert report.broken_seq == 3 and report.head_seq == 2
    assert "changed" in report.reason


async def test_verify_finds_a_removed_record(sql_logs: Logs) -> None:
    log = await sql_logs.open()
    await _five(log)
    assert sql_logs.url is not None
    _tamper(sql_logs.url, "DELETE FROM sandbox_audit WHERE seq = 2")
    (report,) = await log.verify()
    assert (report.ok, report.broken_seq) == (False, 3)
    assert "missing" in report.reason


async def test_verify_finds_a_rewritten_record_by_the_next_link(sql_logs: Logs) -> None:
    """Changing a record and writing its hash anew still breaks the next record's link."""
    log = await sql_logs.open()
    await _five(log)
    assert sql_logs.url is not None
    (third,) = await log.query(AuditQuery(org="acme", after=2, newest_first=False, limit=1))
    forged = chain(
        dataclasses.replace(entry_of(third), target="sandbox/other"),
        seq=3,
        at=third.at,
        prev=third.prev,
    )
    _tamper(
        sql_logs.url,
        f"UPDATE sandbox_audit SET target = 'sandbox/other', hash = '{forged.hash}' WHERE seq = 3",
    )
    (report,) = await log.verify()
    assert not report.ok and report.broken_seq == 4 and report.head_seq == 3
    assert "prev is not the previous record's hash" in report.reason


async def test_verify_finds_removed_newest_records(sql_logs: Logs) -> None:
    log = await sql_logs.open()
    await _five(log)
    assert sql_logs.url is not None
    _tamper(sql_logs.url, "DELETE FROM sandbox_audit WHERE seq >= 4")
    (report,) = await log.verify()
    assert not report.ok and report.broken_seq == 4 and report.head_seq == 3
    assert "newest records were removed" in report.reason


async def test_memory_chain_tampering_shows_too() -> None:
    store = MemoryAuditStore()
    log = AuditLog(store, clock=Clock())
    await _five(log)
    records = store._records["acme"]
    records[1] = dataclasses.replace(records[1], actor_email="someone@else.com")
    (report,) = await log.verify()
    assert (report.ok, report.broken_seq) == (False, 2)


async def test_record_never_raises_when_the_database_is_gone(tmp_path: Path) -> None:
    store = SqlAuditStore(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    log = AuditLog(store)
    await log.start()
    await log.stop()  # closed: every call answers BackendUnavailable
    with pytest.raises(BackendUnavailable):
        await store.append(AuditEntry(action="x", org="acme"), START)
    assert await log.record("sandbox.create", DEV, target="sandbox/a") is None


class _Counting:
    """The store as the log uses it, counting its transactions (and failing some)."""

    def __init__(self, store: Any, fail: int = 0) -> None:
        self.store = store
        self.batches: list[int] = []
        self.fail = fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append_many(self, entries: Any) -> Any:
        self.batches.append(len(entries))
        if self.fail:
            self.fail -= 1
            raise BackendUnavailable("down for the test")
        return await self.store.append_many(entries)


async def test_records_made_together_are_committed_together_in_order(logs: Logs) -> None:
    opened = await logs.open()
    counting = _Counting(opened.store)
    log = AuditLog(counting, clock=logs.clock)  # type: ignore[arg-type]
    made = await asyncio.gather(
        *(log.record("terminal.attach", DEV, target=f"sandbox/{i}") for i in range(60))
    )
    assert [r.target for r in made if r] == [f"sandbox/{i}" for i in range(60)]
    assert [r.seq for r in made if r] == list(range(1, 61))
    assert sum(counting.batches) == 60 and len(counting.batches) < 60
    (report,) = await log.verify()
    assert report.ok and report.records == 60


async def test_a_failed_batch_fails_its_records_and_the_next_ones_are_stored(logs: Logs) -> None:
    opened = await logs.open()
    log = AuditLog(_Counting(opened.store, fail=1), clock=logs.clock)  # type: ignore[arg-type]
    lost = await log.record("sandbox.create", DEV, target="sandbox/lost")
    kept = await log.record("sandbox.create", DEV, target="sandbox/kept")
    assert lost is None
    assert kept is not None and kept.seq == 1


async def test_stop_stores_what_was_recorded_before_it(logs: Logs) -> None:
    log = await logs.open()
    pending = [
        asyncio.ensure_future(log.record("sandbox.create", DEV, target=f"sandbox/{i}"))
        for i in range(20)
    ]
    await asyncio.sleep(0)  # each record() has queued its entry
    await log.stop()
    assert all(p.done() and p.result() is not None for p in pending)
    again = await logs.open()
    assert len(await again.query(AuditQuery(org="acme"))) == 20


async def test_on_sqlite_a_batch_is_fsynced_in_the_committer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 11: the fsync of a record must not stop the event loop (a burst of creates
    # did, once a record each); the record is still FULL, committed before it returns
    loop_thread = threading.get_ident()
    commits: list[tuple[int, bool]] = []  # (synchronous, on the loop's thread?)
    real = sql_sqlite._commit

    def committing(connection: sqlite3.Connection) -> None:
        (level,) = connection.execute("PRAGMA synchronous").fetchone()
        commits.append((level, threading.get_ident() == loop_thread))
        real(connection)

    monkeypatch.setattr(sql_sqlite, "_commit", committing)
    log = AuditLog(SqlAuditStore(f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}"))
    await log.start()
    try:
        made = await log.record("sandbox.create", DEV, target="sandbox/one")
        assert made is not None and made.seq == 1
        assert commits == [(2, False)]
    finally:
        await log.stop()
