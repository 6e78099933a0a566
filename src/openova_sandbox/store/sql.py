"""The SQL backend (SQLite or PostgreSQL) with the apiserver's rules.

Each object is one row holding its Kubernetes document; each change is one row of the
event table under the global resourceVersion (allocation and ordering: ``sql_queries``).
Watchers replay the event table from their cursor, then sleep on an in-process signal
that every commit sets; they also wake every ``poll_interval`` (≤ 1 s) and look again, so
a second process sharing the database is seen without a notification channel. The
events this process committed last (``RECENT_EVENTS``) are also kept in memory, so a
watcher woken by a commit here takes the next versions from there without a query;
whenever the version after its cursor is not there (another process wrote it, or it
fell out) the watcher reads the table, as before. Woken by a commit here and past
this process's newest commit, a watcher sleeps again without reading the table, and a
read that returned less than a batch is not repeated before the next wake-up (issue 11:
during a burst of creates those reads, one or two per wake-up and watcher, were 6 % of
the server's CPU); what another process wrote comes at the next poll, or at once with
the next commit here that shows the gap.

Every call runs under a time budget (5 s by default) and is retried once, on freshly
opened connections, when its failure is transient; what still fails becomes
``BackendUnavailable`` (``sql_retry``, ``sql_errors``). Migrations run in ``start``.

On SQLite the store does not go through SQLAlchemy and aiosqlite after its migrations:
each call is one transaction on its own ``sqlite3`` connections, its statements on the
event loop and a write's COMMIT in a thread (``sql_sqlite``): reads and
``update_status`` with ``synchronous=NORMAL`` (a status write is not fsynced before it
returns; it survives a process crash, and power loss from the next synced commit on),
every other write with ``FULL``. Status is what the controller observed; it writes it
again after a restart, so losing the newest status writes to power loss loses nothing
it cannot recompute, while the objects themselves (create, spec, finalizers, deletion)
never go missing. docs/store.md, "Durability". PostgreSQL
runs the same statements (``sql_queries.SaTx``) through ``run_sync`` on its pool.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

import structlog
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ..domain.errors import BackendUnavailable
from ..domain.model import JSON, Sandbox
from . import semantics as rules
from . import sql_queries as q
from .base import WatchEvent
from .sql_engine import create_engine, migrate, migration_lock, parse_url, safe_url
from .sql_retry import EngineCalls, retrying
from .sql_sqlite import SqliteDirect

log = structlog.get_logger(__name__)

T = TypeVar("T")
# how many of this process's newest committed events watchers can take without a query
RECENT_EVENTS = 512
# A write's work: the value to return, and whether anything changed (else: roll back).
Work = Callable[[q.Tx], tuple[T, bool]]


class SqlStore(EngineCalls):
    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        call_timeout: float = 5.0,
        poll_interval: float = 0.5,
        retain_events: int = 10_000,
    ) -> None:
        if retain_events < 1:
            raise ValueError("retain_events must be at least 1")
        self._url = parse_url(url)
        self._echo = echo
        self._budget = call_timeout
        self._poll = min(poll_interval, 1.0)
        self._retain = retain_events
        self._engine: AsyncEngine | None = None  # SQLite: for the migrations only
        self._direct: SqliteDirect | None = None  # SQLite: every call after them
        self._start_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        # this process's newest committed events by version
        self._recent: dict[int, q.Event] = {}
        self._newest_here = 0  # the newest version this process committed
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def url(self) -> str:
        """The database URL with any password hidden (safe to log or show)."""
        return safe_url(self._url)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._engine is not None:
                return
            self._closed = False
            engine = create_engine(self._url, echo=self._echo, connect_timeout=self._budget)
            try:
                await self._attempts("migrate", engine, self._migrate)
            except BaseException:
                await engine.dispose()
                raise
            self._engine = engine
            if self._url.get_backend_name() == "sqlite":
                assert self._url.database is not None  # parse_url refused the rest
                self._direct = SqliteDirect(self._url.database)
            log.info("store.started", backend=self._url.get_backend_name(), url=self.url)

    async def close(self) -> None:
        self._closed = True
        self._notify()
        async with self._start_lock:
            engine, self._engine = self._engine, None
            direct, self._direct = self._direct, None
            if direct is not None:
                await direct.close()
            if engine is not None:
                await engine.dispose()

    async def ping(self) -> None:
        direct = await self._sqlite()
        if direct is not None:
            await self._direct_call("ping", direct, direct.ping)
            return

        async def work(engine: AsyncEngine) -> None:
            async with engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")

        await self._call("ping", work)

    # --- reads ------------------------------------------------------------------------

    async def get(self, namespace: str, name: str) -> Sandbox:
        found = await self._read("get", lambda tx: tx.load(namespace, name))
        if found is None:
            raise rules.not_found(namespace, name)
        return Sandbox.from_dict(found[0])

    async def list(
        self,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> builtins.list[Sandbox]:
        wanted = dict(labels or {})
        out = []
        for document in await self._read("list", lambda tx: tx.objects_newest_first(namespace)):
            present = document["metadata"].get("labels") or {}
            if all(present.get(k) == v for k, v in wanted.items()):
                out.append(Sandbox.from_dict(document))
        return out

    # --- writes -----------------------------------------------------------------------

    async def create(self, sandbox: Sandbox) -> Sandbox:
        namespace, name = rules.check_key(sandbox)

        def work(tx: q.Tx) -> tuple[Sandbox, bool]:
            version = tx.next_version()
            if tx.load(namespace, name) is not None:
                raise rules.already_exists(namespace, name)
            document = rules.created_document(
                sandbox, uid=rules.new_uid(), version=version, now=rules.now_seconds()
            )
            try:
                tx.insert_object(document, version=version)
            except q.Duplicate as exc:  # a writer outside this store's protocol
                raise rules.already_exists(namespace, name) from exc
            tx.append_event("ADDED", document, version=version, retain=self._retain)
            return Sandbox.from_dict(document), True

        return await self._write("create", work)

    async def update(self, sandbox: Sandbox) -> Sandbox | None:
        def work(tx: q.Tx) -> tuple[Sandbox | None, bool]:
            version = tx.next_version()
            stored = self._current(tx, sandbox)
            document = rules.updated_document(stored, sandbox)
            if document is None:
                return Sandbox.from_dict(stored), False
            document = rules.stamp(document, version)  # this write's own copy
            if rules.is_marked(document) and not rules.has_finalizers(document):
                tx.delete_object(sandbox.namespace, sandbox.name)
                tx.append_event("DELETED", document, version=version, retain=self._retain)
                return None, True
            tx.replace_object(document)
            tx.append_event("MODIFIED", document, version=version, retain=self._retain)
            return Sandbox.from_dict(document), True

        return await self._write("update", work)

    async def update_status(self, sandbox: Sandbox) -> Sandbox:
        def work(tx: q.Tx) -> tuple[Sandbox, bool]:
            version = tx.next_version()
            stored = self._current(tx, sandbox)
            document = rules.status_document(stored, sandbox)
            if document is None:
                return Sandbox.from_dict(stored), False
            document = rules.stamp(document, version)  # this write's own copy
            tx.replace_object(document)
            tx.append_event("MODIFIED", document, version=version, retain=self._retain)
            return Sandbox.from_dict(document), True

        return await self._write("update_status", work, durable=False)

    async def delete(self, namespace: str, name: str) -> Sandbox | None:
        def work(tx: q.Tx) -> tuple[Sandbox | None, bool]:
            version = tx.next_version()
            found = tx.load(namespace, name)
            if found is None:
                raise rules.not_found(namespace, name)
            stored = found[0]
            if not rules.has_finalizers(stored):
                tx.delete_object(namespace, name)
                gone = rules.stamp(stored, version)  # read for this write alone
                tx.append_event("DELETED", gone, version=version, retain=self._retain)
                return None, True
            if rules.is_marked(stored):
                return Sandbox.from_dict(stored), False
            document = rules.stamp(rules.marked_document(stored, now=rules.now_seconds()), version)
            tx.replace_object(document)
            tx.append_event("MODIFIED", document, version=version, retain=self._retain)
            return Sandbox.from_dict(document), True

        return await self._write("delete", work)

    # --- watch ------------------------------------------------------------------------

    def watch(self, since: str | None = None) -> AsyncIterator[WatchEvent]:
        return self._watch(since)

    async def _watch(self, since: str | None) -> AsyncIterator[WatchEvent]:
        start = rules.parse_version(since)
        if start is None:
            snapshot, cursor = await self._snapshot()
            for document in snapshot:
                version = rules.version_of(document)
                yield WatchEvent("ADDED", Sandbox.from_dict(document), str(version))
        else:
            cursor = start
        # read the table: at the start, after each poll interval, while it has more,
        # and when a commit of this process is past the cursor but not in memory
        read_table = True
        while not self._closed:
            changed = self._changed
            recent = self._recent_after(cursor)
            if recent:
                for type_, document, version in recent:
                    if self._closed:
                        return
                    yield WatchEvent(type_, Sandbox.from_dict(document), str(version))
                    cursor = version
                continue
            if read_table or cursor < self._newest_here:
                try:
                    batch, compacted = await self._events_after(cursor)
                except BackendUnavailable:
                    if self._closed:
                        return
                    raise
                if cursor < compacted:
                    raise rules.too_old(cursor, compacted)
                for type_, document, version in batch:
                    if self._closed:
                        return
                    yield WatchEvent(type_, Sandbox.from_dict(document), str(version))
                    cursor = version
                if len(batch) >= q.EVENT_BATCH:
                    continue  # more may follow
            read_table = False
            try:
                async with asyncio.timeout(self._poll):
                    await changed.wait()
            except TimeoutError:
                read_table = True

    # --- internals --------------------------------------------------------------------

    async def _migrate(self, engine: AsyncEngine) -> None:
        async with migration_lock(), engine.connect() as connection:
            connection = await connection.execution_options(sqlite_begin="immediate")
            await connection.run_sync(migrate)
            await connection.commit()

    async def _snapshot(self) -> tuple[builtins.list[JSON], int]:
        """Every object and the version they are current at, from one snapshot."""

        def work(tx: q.Tx) -> tuple[builtins.list[JSON], int]:
            version, _ = tx.current_state()
            return tx.objects_by_version(), version

        return await self._read("watch", work, snapshot=True)

    async def _events_after(self, cursor: int) -> tuple[builtins.list[q.Event], int]:
        def work(tx: q.Tx) -> tuple[builtins.list[q.Event], int]:
            # Events first, compaction mark second: if the mark read afterwards is still
            # at or below the cursor, nothing above the cursor was compacted before.
            batch = tx.events_after(cursor)
            _, compacted = tx.current_state()
            return batch, compacted

        return await self._read("watch", work)

    @staticmethod
    def _current(tx: q.Tx, sandbox: Sandbox) -> JSON:
        namespace, name = rules.check_key(sandbox)
        found = tx.load(namespace, name)
        if found is None:
            raise rules.not_found(namespace, name)
        rules.check_version(found[0], sandbox)
        return found[0]

    def _recent_after(self, cursor: int) -> builtins.list[q.Event]:
        """The committed events right after ``cursor`` this process still holds, in
        order and without a gap; empty when the next one is not held."""
        out = []
        while (event := self._recent.get(cursor + 1)) is not None:
            out.append(event)
            cursor += 1
        return out

    def _committed(self, events: builtins.list[q.Event]) -> None:
        """Hold what was just committed; never what the table compacted away (a watch
        from a compacted version must still be told it is too old)."""
        for event in events:
            self._recent[event[2]] = event
            self._newest_here = max(self._newest_here, event[2])
        if not events:
            return
        floor = events[-1][2] - self._retain  # the compaction mark after this write
        while self._recent:
            oldest = next(iter(self._recent))  # dicts keep insertion (version) order
            if oldest > floor and len(self._recent) <= RECENT_EVENTS:
                break
            del self._recent[oldest]

    async def _sqlite(self) -> SqliteDirect | None:
        """The SQLite connections (``None`` on PostgreSQL), once started."""
        await self._ready()
        return self._direct

    async def _direct_call(
        self, action: str, direct: SqliteDirect, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        async def fresh() -> None:
            direct.recycle()

        return await retrying(
            action, attempt, budget=self._budget, retry=lambda: not self._closed, fresh=fresh
        )

    async def _read(self, action: str, work: Callable[[q.Tx], T], *, snapshot: bool = False) -> T:
        """One read transaction. ``snapshot``: on PostgreSQL at REPEATABLE READ."""
        direct = await self._sqlite()
        if direct is not None:
            return await self._direct_call(action, direct, lambda: direct.read(work))

        async def run(engine: AsyncEngine) -> T:
            async with engine.connect() as connection:
                if snapshot:
                    connection = await connection.execution_options(
                        isolation_level="REPEATABLE READ"
                    )

                def sync(conn: Connection) -> T:
                    return work(q.SaTx(conn))

                return await connection.run_sync(sync)

        return await self._call(action, run)

    async def _write(self, action: str, work: Work[T], *, durable: bool = True) -> T:
        """One write transaction: the counter row first, commit only when it changed.
        ``durable``: fsynced before it returns; on SQLite a status write is not
        (``synchronous=NORMAL``, see the module's docstring)."""
        direct = await self._sqlite()
        if direct is not None:

            async def attempt() -> tuple[T, builtins.list[q.Event]]:
                async with self._write_lock:
                    done = await direct.write(work, durable=durable)
                    self._committed(done[1])  # in version order: under the lock
                    return done

            value, committed = await self._direct_call(action, direct, attempt)
        else:

            async def run(engine: AsyncEngine) -> tuple[T, builtins.list[q.Event]]:
                async with self._write_lock, engine.connect() as connection:

                    def sync(conn: Connection) -> tuple[T, builtins.list[q.Event]]:
                        tx = q.SaTx(conn)
                        result, changed = work(tx)
                        if changed:
                            conn.commit()
                        else:
                            conn.rollback()
                        return result, tx.pending if changed else []

                    done = await connection.run_sync(sync)
                    self._committed(done[1])  # in version order: under the lock
                    return done

            value, committed = await self._call(action, run)
        if committed:
            self._notify()
        return value

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
