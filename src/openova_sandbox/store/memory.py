"""The in-memory reference backend: the Store rules with nothing in the way.

Tests and the embedded ``SANDBOX_STORE=memory`` mode use it; the contract suite holds the
SQL backend to exactly the same behaviour. Objects are kept as Kubernetes JSON documents
(the same bytes the SQL store persists) and rebuilt on every read, so callers never share
mutable state with the store.

Watchers follow an event log with a cursor. The log keeps the last ``retain_events``
changes; a watcher resuming from (or falling behind to) an older resourceVersion gets
``Conflict(code="resource-version-too-old")``, like the apiserver's 410 Gone. Waiting
uses one ``asyncio.Event`` per change generation: every write sets the current event and
installs a fresh one, so any number of watchers wake without polling, and ``close`` wakes
them for the last time so their generators return.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from ..domain.errors import BackendUnavailable
from ..domain.model import JSON, Sandbox
from . import semantics as rules
from .base import EventType, WatchEvent

UNAVAILABLE = "sandbox backend temporarily unavailable"


@dataclass(frozen=True)
class _Entry:
    document: JSON
    created: int  # resourceVersion of the create: orders the list newest first


@dataclass(frozen=True)
class _Change:
    type: EventType
    document: JSON
    version: int

    def event(self) -> WatchEvent:
        return WatchEvent(self.type, Sandbox.from_dict(self.document), str(self.version))


class MemoryStore:
    def __init__(self, *, retain_events: int = 10_000) -> None:
        if retain_events < 1:
            raise ValueError("retain_events must be at least 1")
        self._retain = retain_events
        self._objects: dict[tuple[str, str], _Entry] = {}
        self._version = 0
        self._log: list[_Change] = []
        self._compacted = 0  # every change with version <= this is gone from the log
        self._changed = asyncio.Event()
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        self._notify()

    async def ping(self) -> None:
        self._check_open()

    # --- reads ------------------------------------------------------------------------

    async def get(self, namespace: str, name: str) -> Sandbox:
        self._check_open()
        entry = self._objects.get((namespace, name))
        if entry is None:
            raise rules.not_found(namespace, name)
        return Sandbox.from_dict(entry.document)

    async def list(
        self,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> builtins.list[Sandbox]:
        self._check_open()
        wanted = dict(labels or {})
        entries = sorted(self._objects.values(), key=lambda e: e.created, reverse=True)
        out = []
        for entry in entries:
            meta = entry.document["metadata"]
            if namespace is not None and meta["namespace"] != namespace:
                continue
            present = meta.get("labels") or {}
            if all(present.get(k) == v for k, v in wanted.items()):
                out.append(Sandbox.from_dict(entry.document))
        return out

    # --- writes -----------------------------------------------------------------------

    async def create(self, sandbox: Sandbox) -> Sandbox:
        self._check_open()
        key = rules.check_key(sandbox)
        if key in self._objects:
            raise rules.already_exists(*key)
        version = self._version + 1
        document = rules.created_document(
            sandbox, uid=rules.new_uid(), version=version, now=rules.now_seconds()
        )
        self._objects[key] = _Entry(document, created=version)
        self._record("ADDED", document, version)
        return Sandbox.from_dict(document)

    async def update(self, sandbox: Sandbox) -> Sandbox | None:
        self._check_open()
        key, entry = self._current(sandbox)
        document = rules.updated_document(entry.document, sandbox)
        if document is None:
            return Sandbox.from_dict(entry.document)
        version = self._version + 1
        document = rules.stamped(document, version)
        if rules.is_marked(document) and not rules.has_finalizers(document):
            del self._objects[key]
            self._record("DELETED", document, version)
            return None
        self._objects[key] = _Entry(document, created=entry.created)
        self._record("MODIFIED", document, version)
        return Sandbox.from_dict(document)

    async def update_status(self, sandbox: Sandbox) -> Sandbox:
        self._check_open()
        key, entry = self._current(sandbox)
        document = rules.status_document(entry.document, sandbox)
        if document is None:
            return Sandbox.from_dict(entry.document)
        version = self._version + 1
        document = rules.stamped(document, version)
        self._objects[key] = _Entry(document, created=entry.created)
        self._record("MODIFIED", document, version)
        return Sandbox.from_dict(document)

    async def delete(self, namespace: str, name: str) -> Sandbox | None:
        self._check_open()
        entry = self._objects.get((namespace, name))
        if entry is None:
            raise rules.not_found(namespace, name)
        if rules.has_finalizers(entry.document):
            if rules.is_marked(entry.document):
                return Sandbox.from_dict(entry.document)
            version = self._version + 1
            document = rules.stamped(
                rules.marked_document(entry.document, now=rules.now_seconds()), version
            )
            self._objects[(namespace, name)] = _Entry(document, created=entry.created)
            self._record("MODIFIED", document, version)
            return Sandbox.from_dict(document)
        version = self._version + 1
        del self._objects[(namespace, name)]
        self._record("DELETED", rules.stamped(entry.document, version), version)
        return None

    # --- watch ------------------------------------------------------------------------

    def watch(self, since: str | None = None) -> AsyncIterator[WatchEvent]:
        return self._watch(since)

    async def _watch(self, since: str | None) -> AsyncIterator[WatchEvent]:
        self._check_open()
        start = rules.parse_version(since)
        if start is None:
            # Snapshot and cursor are taken together (no await in between).
            snapshot = sorted(self._objects.values(), key=lambda e: rules.version_of(e.document))
            cursor = self._version
            for entry in snapshot:
                document = entry.document
                yield WatchEvent(
                    "ADDED", Sandbox.from_dict(document), str(rules.version_of(document))
                )
        else:
            cursor = start
        while not self._closed:
            if cursor < self._compacted:
                raise rules.too_old(cursor, self._compacted)
            changed = self._changed
            pending = self._since(cursor)
            if not pending:
                await changed.wait()
                continue
            for change in pending:
                if self._closed:
                    return
                yield change.event()
                cursor = change.version

    # --- internals --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(UNAVAILABLE)

    def _current(self, sandbox: Sandbox) -> tuple[tuple[str, str], _Entry]:
        key = rules.check_key(sandbox)
        entry = self._objects.get(key)
        if entry is None:
            raise rules.not_found(*key)
        rules.check_version(entry.document, sandbox)
        return key, entry

    def _since(self, cursor: int) -> builtins.list[_Change]:
        # Versions in the log are dense (every version is one change), so the position
        # of ``cursor + 1`` is arithmetic.
        if not self._log:
            return []
        first = self._log[0].version
        return self._log[max(0, cursor + 1 - first) :]

    def _record(self, type_: EventType, document: JSON, version: int) -> None:
        self._version = version
        self._log.append(_Change(type_, document, version))
        if len(self._log) >= 2 * self._retain:
            dropped = len(self._log) - self._retain
            self._compacted = self._log[dropped - 1].version
            del self._log[:dropped]
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
