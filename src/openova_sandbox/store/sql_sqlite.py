"""The SQL store on SQLite without SQLAlchemy or aiosqlite on the way: its own ``sqlite3``
connections, one transaction per call.

Through SQLAlchemy and aiosqlite every statement of a transaction was a hop to
aiosqlite's thread and back (six for a create), each woken through the event loop and
each waiting for the GIL while the loop ran Python (up to the 5 ms switch interval):
3-5 ms per write on an idle server and 10-20 under the load of a sandbox being created
(issue 10, "create → first agent byte"). Here a transaction's statements are one
synchronous function (``sql_queries.Tx`` over plain SQL, the same statements as
``sql_queries.SaTx``) run **on the event loop**, on connections that never wait for a
lock (``busy_timeout=0``) and never checkpoint: tens of microseconds. A write's COMMIT -
its WAL write and, for a durable one, the fsync - runs in one committer thread, so that
I/O never stops the loop (issue 11, below): one hop per write, not one per statement.

- Reads use their own connection (``synchronous=NORMAL``), on the loop; status writes a
  writer with ``NORMAL`` (nothing is fsynced); create, update and delete one with
  ``FULL`` (the WAL is fsynced before the COMMIT returns, and the call with it).
- One write transaction at a time: the writer's statements run while no COMMIT is in
  flight. A COMMIT once started is waited for even if the caller's budget runs out or it
  is cancelled, and its outcome is returned: the change is in the database, and a retry
  would answer "already exists" for the caller's own create.
- When the database is locked (another connection is writing: the ledger's or the
  audit log's in this process, or another process) the call tries again on the loop
  after a short sleep (0.2 ms, doubling up to 5 ms) until ``SQLITE_BUSY_TIMEOUT_MS``.
  SQLite's own busy handler (what a connection with a busy timeout does) sleeps 1, 2,
  5, 10, 15, 20, 25 ms between its tries: a status write that met the audit log's
  write waited 42 ms behind it in a worker thread that way, against ~1 ms here.
- Every ``CHECKPOINT_EVERY`` commits a worker thread runs a passive WAL checkpoint.

A worker thread for every statement was tried and measured first: a create took 1-12 ms
on a busy server, for the thread waiting for the GIL at each statement. The COMMIT on
the loop was measured next (issue 11, ``bench/control_plane.py``): during a burst of
creates (four fsyncs each: the create, the finalizer, the audit record, the gateway
token) the loop stopped in fsyncs and WAL writes for 15-25 % of its time, in runs of
tens of them per loop iteration, and the neighbour's lists waited behind them
(docs/lifecycle.md, "Performance: a thousand sandboxes").

What a ``NORMAL`` commit keeps is in docs/store.md, "Durability": everything across a
process crash; across power loss, everything up to the last fsync, which any later
``FULL`` commit makes (the WAL is one append-only file, recovered as a prefix).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar, cast

from ..domain.model import JSON, utcnow
from .base import EventType
from .sql_engine import SQLITE_BUSY_TIMEOUT_MS
from .sql_queries import EVENT_BATCH, Duplicate, Event, Tx, columns

T = TypeVar("T")
CHECKPOINT_EVERY = 256  # commits between two passive checkpoints
FIRST_PAUSE, LAST_PAUSE = 0.0002, 0.005  # seconds between two tries on a locked database
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _json(value: Any) -> str:
    return json.dumps(value)  # what SQLAlchemy's JSON type writes on SQLite


def _time(value: datetime | None) -> str | None:
    """As SQLAlchemy's SQLite ``DateTime`` stores it (the values are UTC)."""
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")


def locked(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    text = str(exc)
    return "locked" in text or "busy" in text


_INSERT_OBJECT = (
    "INSERT INTO sandbox_objects (namespace, name, created_version, uid, resource_version,"
    " generation, created_at, deleted_at, labels, document) VALUES (:namespace, :name,"
    " :created_version, :uid, :resource_version, :generation, :created_at, :deleted_at,"
    " :labels, :document)"
)
_REPLACE_OBJECT = (
    "UPDATE sandbox_objects SET uid = :uid, resource_version = :resource_version,"
    " generation = :generation, created_at = :created_at, deleted_at = :deleted_at,"
    " labels = :labels, document = :document WHERE namespace = :namespace AND name = :name"
)
_INSERT_EVENT = (
    "INSERT INTO sandbox_events (resource_version, type, namespace, name, recorded_at,"
    " document) VALUES (?, ?, ?, ?, ?, ?)"
)


class SqliteTx:
    """The steps of ``sql_queries.Tx`` as plain SQL on a ``sqlite3`` connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self.pending: list[Event] = []

    def next_version(self) -> int:
        row = self._db.execute(
            "UPDATE sandbox_store_state SET resource_version = resource_version + 1"
            " WHERE id = 1 RETURNING resource_version"
        ).fetchone()
        return int(row[0])

    def current_state(self) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT resource_version, compacted_version FROM sandbox_store_state WHERE id = 1"
        ).fetchone()
        return int(row[0]), int(row[1])

    def load(self, namespace: str, name: str) -> tuple[JSON, int] | None:
        row = self._db.execute(
            "SELECT document, created_version FROM sandbox_objects"
            " WHERE namespace = ? AND name = ?",
            (namespace, name),
        ).fetchone()
        if row is None:
            return None
        return dict(json.loads(row[0])), int(row[1])

    @staticmethod
    def _row(document: JSON) -> dict[str, Any]:
        meta = document["metadata"]
        row = columns(document)
        row.update(
            namespace=meta["namespace"],
            name=meta["name"],
            created_at=_time(row["created_at"]),
            deleted_at=_time(row["deleted_at"]),
            labels=_json(row["labels"]),
            document=_json(document),
        )
        return row

    def insert_object(self, document: JSON, *, version: int) -> None:
        try:
            self._db.execute(_INSERT_OBJECT, {**self._row(document), "created_version": version})
        except sqlite3.IntegrityError as exc:
            raise Duplicate(str(exc)) from exc

    def replace_object(self, document: JSON) -> None:
        self._db.execute(_REPLACE_OBJECT, self._row(document))

    def delete_object(self, namespace: str, name: str) -> None:
        self._db.execute(
            "DELETE FROM sandbox_objects WHERE namespace = ? AND name = ?", (namespace, name)
        )

    def append_event(self, type_: EventType, document: JSON, *, version: int, retain: int) -> None:
        meta = document["metadata"]
        self._db.execute(
            _INSERT_EVENT,
            (version, type_, meta["namespace"], meta["name"], _time(utcnow()), _json(document)),
        )
        self.pending.append((type_, document, version))
        horizon = version - retain
        if horizon > 0:
            gone = self._db.execute(
                "DELETE FROM sandbox_events WHERE resource_version <= ?", (horizon,)
            ).rowcount
            if gone:
                self._db.execute(
                    "UPDATE sandbox_store_state SET compacted_version = ? WHERE id = 1", (horizon,)
                )

    def objects_newest_first(self, namespace: str | None) -> list[JSON]:
        if namespace is None:
            rows = self._db.execute(
                "SELECT document FROM sandbox_objects ORDER BY created_version DESC"
            )
        else:
            rows = self._db.execute(
                "SELECT document FROM sandbox_objects WHERE namespace = ?"
                " ORDER BY created_version DESC",
                (namespace,),
            )
        return [dict(json.loads(row[0])) for row in rows]

    def objects_by_version(self) -> list[JSON]:
        rows = self._db.execute("SELECT document FROM sandbox_objects ORDER BY resource_version")
        return [dict(json.loads(row[0])) for row in rows]

    def events_after(self, cursor: int) -> list[Event]:
        rows = self._db.execute(
            "SELECT type, document, resource_version FROM sandbox_events"
            " WHERE resource_version > ? ORDER BY resource_version LIMIT ?",
            (cursor, EVENT_BATCH),
        )
        return [(cast(EventType, row[0]), dict(json.loads(row[1])), int(row[2])) for row in rows]


Work = Callable[[Tx], tuple[T, bool]]  # the value, and whether to commit (else roll back)


def _transaction(
    connection: sqlite3.Connection, work: Work[T], *, write: bool
) -> tuple[T, list[Event]]:
    """``work`` in one transaction; the events it committed ([] when it rolled back)."""
    connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    tx = SqliteTx(connection)
    try:
        value, changed = work(tx)
        connection.execute("COMMIT" if changed else "ROLLBACK")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return value, tx.pending if changed else []


def _statements(connection: sqlite3.Connection, work: Work[T]) -> tuple[T, list[Event] | None]:
    """``work``'s statements in a write transaction left open for its COMMIT; ``None``
    for the events: nothing changed, rolled back already."""
    connection.execute("BEGIN IMMEDIATE")
    tx = SqliteTx(connection)
    try:
        value, changed = work(tx)
        if not changed:
            connection.execute("ROLLBACK")
            return value, None
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return value, tx.pending


def _commit(connection: sqlite3.Connection) -> None:
    """The open transaction's COMMIT (run in the committer thread): the WAL frames
    written and, on a ``FULL`` connection, fsynced."""
    try:
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


class SqliteDirect:
    """The store's ``sqlite3`` connections: a reader on the event loop, two writers
    (``NORMAL`` and ``FULL``) whose statements run on the loop and whose COMMIT runs in
    a thread, and a thread for checkpoints."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._reader: sqlite3.Connection | None = None
        self._writers: dict[bool, sqlite3.Connection] = {}  # durable? -> connection
        self._writing = asyncio.Lock()  # one write transaction at a time
        self._recycle_writers = False
        # the commits' thread: the only place a write's I/O (WAL write, fsync) happens
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-commit")
        # the checkpoints' thread and connection (used in that thread only)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-sqlite")
        self._worker: sqlite3.Connection | None = None
        self._recycle_worker = False
        self._commits = 0
        self._checkpoint: asyncio.Future[None] | None = None

    def _connect(
        self, *, busy_ms: int, synchronous: str, autocheckpoint: int
    ) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path,
            isolation_level=None,  # BEGIN/COMMIT are ours
            check_same_thread=False,
            timeout=busy_ms / 1000,
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {synchronous}")
            connection.execute(f"PRAGMA wal_autocheckpoint = {autocheckpoint}")
            connection.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            connection.close()
            raise
        return connection

    def _reader_connection(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = self._connect(busy_ms=0, synchronous="NORMAL", autocheckpoint=0)
        return self._reader

    def _writer_connection(self, *, durable: bool) -> sqlite3.Connection:
        if self._recycle_writers:  # no commit runs: the write lock is held
            self._recycle_writers = False
            writers, self._writers = self._writers, {}
            for old in writers.values():
                old.close()
        found = self._writers.get(durable)
        if found is None:
            synchronous = "FULL" if durable else "NORMAL"
            found = self._connect(busy_ms=0, synchronous=synchronous, autocheckpoint=0)
            self._writers[durable] = found
        return found

    def _worker_connection(self) -> sqlite3.Connection:
        if self._recycle_worker and self._worker is not None:
            self._worker.close()
            self._worker = None
        self._recycle_worker = False
        if self._worker is None:
            self._worker = self._connect(
                busy_ms=SQLITE_BUSY_TIMEOUT_MS, synchronous="FULL", autocheckpoint=1000
            )
        return self._worker

    # ------------------------------------------------------------------ calls

    async def read(self, work: Callable[[Tx], T]) -> T:
        """A read transaction (a snapshot), on the loop."""

        def as_work(tx: Tx) -> tuple[T, bool]:
            return work(tx), False

        loop = asyncio.get_running_loop()
        deadline = loop.time() + SQLITE_BUSY_TIMEOUT_MS / 1000
        pause = FIRST_PAUSE
        while True:
            try:
                value, _ = _transaction(self._reader_connection(), as_work, write=False)
                return value
            except sqlite3.OperationalError as exc:
                if not locked(exc) or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, LAST_PAUSE)

    async def write(self, work: Work[T], *, durable: bool) -> tuple[T, list[Event]]:
        """A write transaction; ``durable``: fsynced before it returns (``FULL``), else
        ``NORMAL``. Returns the value and the events it committed.

        The statements run on the loop (a locked database is tried again after a short
        sleep); the COMMIT - the WAL write and, for ``FULL``, the fsync - in the
        committer thread, so the loop serves others meanwhile. A COMMIT once started is
        waited for even if the caller is cancelled meanwhile, and its outcome returned,
        as a COMMIT on the loop could not be interrupted either: a caller whose budget
        ran out must not retry a write that is in the database."""
        async with self._writing:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SQLITE_BUSY_TIMEOUT_MS / 1000
            pause = FIRST_PAUSE
            while True:
                try:
                    connection = self._writer_connection(durable=durable)
                    value, events = _statements(connection, work)
                    if events is None:
                        return value, []
                    await commit_in_thread(connection, self._committer)
                    break
                except sqlite3.OperationalError as exc:
                    if not locked(exc) or loop.time() + pause > deadline:
                        raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, LAST_PAUSE)
        self._committed()
        return value, events

    def _committed(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and (
            self._checkpoint is None or self._checkpoint.done()
        ):
            self._checkpoint = asyncio.get_running_loop().run_in_executor(
                self._executor, self._run_checkpoint
            )

    def _run_checkpoint(self) -> None:
        # on failure the next one, or the worker's automatic checkpoint, catches up
        with contextlib.suppress(sqlite3.Error):
            self._worker_connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def ping(self) -> None:
        self._reader_connection().execute("SELECT 1").fetchone()

    # ------------------------------------------------------------------ lifecycle

    def recycle(self) -> None:
        """Open fresh connections for the next attempt (after a transient failure); the
        writers once no write transaction uses them."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        self._recycle_writers = True
        self._recycle_worker = True

    async def close(self) -> None:
        async with self._writing:  # a COMMIT in flight ends first
            writers, self._writers = self._writers, {}
            for connection in writers.values():
                connection.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        self._committer.shutdown(wait=False)

        def close_worker() -> None:
            if self._worker is not None:
                self._worker.close()
                self._worker = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, close_worker)
        self._executor.shutdown(wait=False)


async def commit_in_thread(connection: sqlite3.Connection, committer: Executor) -> None:
    """The open transaction of ``connection`` committed in ``committer`` (a thread of
    its own), the loop free meanwhile; waited for through any cancellation of the
    caller (the outcome is the database's once the COMMIT started); its error, if it
    failed (rolled back). The store's writes, the audit log's and the ledger's durable
    ones use it; ``connection`` must not be used elsewhere until it returns."""
    future = asyncio.get_running_loop().run_in_executor(committer, _commit, connection)
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(future)
    future.result()
