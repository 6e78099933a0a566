"""The SQL backend (SQLite or PostgreSQL) with the apiserver's rules.

Each object is one row holding its Kubernetes document; each change is one row of the
event table under the global resourceVersion (allocation and ordering: ``sql_queries``).
Watchers replay the event table from their cursor, then sleep on an in-process signal
that every commit sets; they also wake every ``poll_interval`` (≤ 1 s) and look again, so
a second process sharing the database is seen without a notification channel. The
events this process committed last (``RECENT_EVENTS``) are also kept in memory, so a
watcher woken by a commit here takes the next versions from there without a query;
whenever the version after its cursor is not there (another process wrote it, or it
fell out) the watcher reads the table, as before.

Every call runs under a time budget (5 s by default) and is retried once, on freshly
opened connections, when its failure is transient; what still fails becomes
``BackendUnavailable`` (``sql_retry``, ``sql_errors``). Migrations run in ``start``.

On SQLite, ``update_status`` commits on a second engine whose connections run
``synchronous=NORMAL``: a status write is not fsynced before it returns (it survives a
process crash, and power loss from the next synced commit on), every other write is
(``FULL``). Status is what the controller observed; it writes it again after a restart,
so losing the newest status writes to power loss loses nothing it cannot recompute,
while the objects themselves (create, spec, finalizers, deletion) never go missing.
docs/store.md, "Durability".
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..domain.errors import BackendUnavailable
from ..domain.model import JSON, Sandbox
from . import semantics as rules
from . import sql_queries as q
from .base import EventType, WatchEvent
from .sql_engine import create_engine, migrate, migration_lock, parse_url, safe_url
from .sql_retry import EngineCalls

log = structlog.get_logger(__name__)

T = TypeVar("T")
# how many of this process's newest committed events watchers can take without a query
RECENT_EVENTS = 512
# A write's work: the value to return, and whether anything changed (else: roll back).
Work = Callable[[AsyncConnection], Awaitable[tuple[T, bool]]]


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
        self._engine: AsyncEngine | None = None
        self._status_engine: AsyncEngine | None = None  # SQLite: synchronous=NORMAL
        self._start_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        # the events of the transaction under way (under the write lock), and this
        # process's newest committed ones by version
        self._pending: builtins.list[q.Event] = []
        self._recent: dict[int, q.Event] = {}
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
                self._status_engine = create_engine(
                    self._url, echo=self._echo, connect_timeout=self._budget, synchronous="NORMAL"
                )
            log.info("store.started", backend=self._url.get_backend_name(), url=self.url)

    async def close(self) -> None:
        self._closed = True
        self._notify()
        async with self._start_lock:
            engine, self._engine = self._engine, None
            status_engine, self._status_engine = self._status_engine, None
            for each in (engine, status_engine):
                if each is not None:
                    await each.dispose()

    async def ping(self) -> None:
        async def work(engine: AsyncEngine) -> None:
            async with engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")

        await self._call("ping", work)

    # --- reads ------------------------------------------------------------------------

    async def get(self, namespace: str, name: str) -> Sandbox:
        async def work(engine: AsyncEngine) -> tuple[JSON, int] | None:
            async with engine.connect() as connection:
                return await q.load(connection, namespace, name)

        found = await self._call("get", work)
        if found is None:
            raise rules.not_found(namespace, name)
        return Sandbox.from_dict(found[0])

    async def list(
        self,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> builtins.list[Sandbox]:
        async def work(engine: AsyncEngine) -> builtins.list[JSON]:
            async with engine.connect() as connection:
                return await q.objects_newest_first(connection, namespace)

        wanted = dict(labels or {})
        out = []
        for document in await self._call("list", work):
            present = document["metadata"].get("labels") or {}
            if all(present.get(k) == v for k, v in wanted.items()):
                out.append(Sandbox.from_dict(document))
        return out

    # --- writes -----------------------------------------------------------------------

    async def create(self, sandbox: Sandbox) -> Sandbox:
        namespace, name = rules.check_key(sandbox)

        async def work(connection: AsyncConnection) -> tuple[Sandbox, bool]:
            version = await q.next_version(connection)
            if await q.load(connection, namespace, name) is not None:
                raise rules.already_exists(namespace, name)
            document = rules.created_document(
                sandbox, uid=rules.new_uid(), version=version, now=rules.now_seconds()
            )
            try:
                await q.insert_object(connection, document, version=version)
            except IntegrityError as exc:  # a writer outside this store's protocol
                raise rules.already_exists(namespace, name) from exc
            await self._append(connection, "ADDED", document, version)
            return Sandbox.from_dict(document), True

        return await self._write("create", work)

    async def update(self, sandbox: Sandbox) -> Sandbox | None:
        async def work(connection: AsyncConnection) -> tuple[Sandbox | None, bool]:
            version = await q.next_version(connection)
            stored = await self._current(connection, sandbox)
            document = rules.updated_document(stored, sandbox)
            if document is None:
                return Sandbox.from_dict(stored), False
            document = rules.stamped(document, version)
            if rules.is_marked(document) and not rules.has_finalizers(document):
                await q.delete_object(connection, sandbox.namespace, sandbox.name)
                await self._append(connection, "DELETED", document, version)
                return None, True
            await q.replace_object(connection, document)
            await self._append(connection, "MODIFIED", document, version)
            return Sandbox.from_dict(document), True

        return await self._write("update", work)

    async def update_status(self, sandbox: Sandbox) -> Sandbox:
        async def work(connection: AsyncConnection) -> tuple[Sandbox, bool]:
            version = await q.next_version(connection)
            stored = await self._current(connection, sandbox)
            document = rules.status_document(stored, sandbox)
            if document is None:
                return Sandbox.from_dict(stored), False
            document = rules.stamped(document, version)
            await q.replace_object(connection, document)
            await self._append(connection, "MODIFIED", document, version)
            return Sandbox.from_dict(document), True

        return await self._write("update_status", work, status_only=True)

    async def delete(self, namespace: str, name: str) -> Sandbox | None:
        async def work(connection: AsyncConnection) -> tuple[Sandbox | None, bool]:
            version = await q.next_version(connection)
            found = await q.load(connection, namespace, name)
            if found is None:
                raise rules.not_found(namespace, name)
            stored = found[0]
            if not rules.has_finalizers(stored):
                await q.delete_object(connection, namespace, name)
                await self._append(connection, "DELETED", rules.stamped(stored, version), version)
                return None, True
            if rules.is_marked(stored):
                return Sandbox.from_dict(stored), False
            document = rules.stamped(
                rules.marked_document(stored, now=rules.now_seconds()), version
            )
            await q.replace_object(connection, document)
            await self._append(connection, "MODIFIED", document, version)
            return Sandbox.from_dict(document), True

        return await self._write("delete", work)

    # --- watch ------------------------------------------------------------------------

    def watch(self, since: str | None = None) -> AsyncIterator[WatchEvent]:
        return self._watch(since)

    async def _watch(self, since: str | None) -> AsyncIterator[WatchEvent]:
        start = rules.parse_version(since)
        if start is None:
            snapshot, cursor = await self._call("watch", self._snapshot)
            for document in snapshot:
                version = rules.version_of(document)
                yield WatchEvent("ADDED", Sandbox.from_dict(document), str(version))
        else:
            cursor = start
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
            try:
                batch, compacted = await self._call("watch", self._events_after(cursor))
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
            if batch:
                continue
            try:
                async with asyncio.timeout(self._poll):
                    await changed.wait()
            except TimeoutError:
                pass

    # --- internals --------------------------------------------------------------------

    async def _migrate(self, engine: AsyncEngine) -> None:
        async with migration_lock(), engine.connect() as connection:
            connection = await connection.execution_options(sqlite_begin="immediate")
            await connection.run_sync(migrate)
            await connection.commit()

    async def _snapshot(self, engine: AsyncEngine) -> tuple[builtins.list[JSON], int]:
        """Every object and the version they are current at, from one snapshot."""
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection = await connection.execution_options(isolation_level="REPEATABLE READ")
            version, _ = await q.current_state(connection)
            documents = await q.objects_by_version(connection)
            return documents, version

    def _events_after(
        self, cursor: int
    ) -> Callable[[AsyncEngine], Awaitable[tuple[builtins.list[q.Event], int]]]:
        async def work(engine: AsyncEngine) -> tuple[builtins.list[q.Event], int]:
            # Events first, compaction mark second: if the mark read afterwards is still
            # at or below the cursor, nothing above the cursor was compacted before.
            async with engine.connect() as connection:
                batch = await q.events_after(connection, cursor)
                _, compacted = await q.current_state(connection)
                return batch, compacted

        return work

    async def _current(self, connection: AsyncConnection, sandbox: Sandbox) -> JSON:
        namespace, name = rules.check_key(sandbox)
        found = await q.load(connection, namespace, name)
        if found is None:
            raise rules.not_found(namespace, name)
        rules.check_version(found[0], sandbox)
        return found[0]

    async def _append(
        self, connection: AsyncConnection, type_: EventType, document: JSON, version: int
    ) -> None:
        await q.append_event(connection, type_, document, version=version, retain=self._retain)
        self._pending.append((type_, document, version))

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
        if not events:
            return
        floor = events[-1][2] - self._retain  # the compaction mark after this write
        while self._recent:
            oldest = next(iter(self._recent))  # dicts keep insertion (version) order
            if oldest > floor and len(self._recent) <= RECENT_EVENTS:
                break
            del self._recent[oldest]

    async def _write(self, action: str, work: Work[T], *, status_only: bool = False) -> T:
        """One write transaction: the counter row first, commit only when it changed.
        ``status_only``: on SQLite, on the ``synchronous=NORMAL`` engine."""

        async def run(engine: AsyncEngine) -> T:
            async with self._write_lock, engine.connect() as connection:
                self._pending = []
                connection = await connection.execution_options(sqlite_begin="immediate")
                value, changed = await work(connection)
                if changed:
                    await connection.commit()
                    self._committed(self._pending)
                else:
                    await connection.rollback()
                self._pending = []
            if changed:
                self._notify()
            return value

        if status_only:
            await self._ready()
            status_engine = self._status_engine
            if status_engine is not None:
                return await self._attempts(action, status_engine, run)
        return await self._call(action, run)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
