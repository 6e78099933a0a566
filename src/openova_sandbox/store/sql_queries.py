"""The SQL store's statements: one transaction's steps, behind one small interface.

Every write transaction begins with ``next_version``: an ``UPDATE ... RETURNING`` on the
single counter row. The row lock it takes is held until commit, so writers run one at
a time and commit in resourceVersion order - a reader that sees version N has already
seen every version below N, which is what makes replaying the event table by
``resource_version > cursor`` complete. (A plain sequence would not: a transaction that
drew 7 could commit before the one that drew 6, and a watcher reading in between would
skip 6 forever.) A transaction that fails or changes nothing rolls back, and the counter
with it, so versions are dense: every version is exactly one event.

The steps are synchronous and written twice, once per driver: :class:`SaTx` with
SQLAlchemy Core on a synchronous connection (PostgreSQL, through ``run_sync`` on the
pooled asyncpg connection) and ``sql_sqlite.SqliteTx`` as plain SQL on the store's own
``sqlite3`` connections. The store's operations (``sql.py``) are written once against
:class:`Tx`. Both keep the events the transaction appended in ``pending``.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..domain.model import JSON, parse_time, utcnow
from .base import EventType
from .sql_schema import events, objects, state

EVENT_BATCH = 500
Event = tuple[EventType, JSON, int]  # type, document, resourceVersion


class Duplicate(Exception):
    """The object's key or uid is taken (a writer outside this store's protocol)."""


class Tx(Protocol):
    """One transaction's statements; ``pending``: the events it appended."""

    pending: list[Event]

    def next_version(self) -> int: ...

    def current_state(self) -> tuple[int, int]:
        """(latest resourceVersion, compaction mark)."""
        ...

    def load(self, namespace: str, name: str) -> tuple[JSON, int] | None:
        """The stored document and its create version, or ``None``. The document is
        parsed for this call: the caller may change it."""
        ...

    def insert_object(self, document: JSON, *, version: int) -> None:
        """Raises :class:`Duplicate` when the key or uid is taken."""
        ...

    def replace_object(self, document: JSON) -> None: ...

    def delete_object(self, namespace: str, name: str) -> None: ...

    def append_event(self, type_: EventType, document: JSON, *, version: int, retain: int) -> None:
        """Record the change (and keep it in ``pending``), then drop the events that
        fell out of the retention window."""
        ...

    def objects_newest_first(self, namespace: str | None) -> list[JSON]: ...

    def objects_by_version(self) -> list[JSON]: ...

    def events_after(self, cursor: int) -> list[Event]: ...


def columns(document: JSON) -> dict[str, Any]:
    """The columns of ``sandbox_objects`` other than the key and ``created_version``."""
    meta = document["metadata"]
    return {
        "uid": meta["uid"],
        "resource_version": int(meta["resourceVersion"]),
        "generation": int(meta.get("generation", 1)),
        "created_at": parse_time(meta.get("creationTimestamp")) or utcnow(),
        "deleted_at": parse_time(meta.get("deletionTimestamp")),
        "labels": dict(meta.get("labels") or {}),
        "document": document,
    }


class SaTx:
    """The steps in SQLAlchemy Core, on a synchronous connection in a transaction."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.pending: list[Event] = []

    def next_version(self) -> int:
        row = self._connection.execute(
            update(state)
            .where(state.c.id == 1)
            .values(resource_version=state.c.resource_version + 1)
            .returning(state.c.resource_version)
        ).one()
        return int(row.resource_version)

    def current_state(self) -> tuple[int, int]:
        row = self._connection.execute(
            select(state.c.resource_version, state.c.compacted_version).where(state.c.id == 1)
        ).one()
        return int(row.resource_version), int(row.compacted_version)

    def load(self, namespace: str, name: str) -> tuple[JSON, int] | None:
        row = self._connection.execute(
            select(objects.c.document, objects.c.created_version).where(
                objects.c.namespace == namespace, objects.c.name == name
            )
        ).one_or_none()
        if row is None:
            return None
        return dict(row.document), int(row.created_version)

    def insert_object(self, document: JSON, *, version: int) -> None:
        meta = document["metadata"]
        try:
            self._connection.execute(
                insert(objects).values(
                    namespace=meta["namespace"],
                    name=meta["name"],
                    created_version=version,
                    **columns(document),
                )
            )
        except IntegrityError as exc:
            raise Duplicate(str(exc.orig)) from exc

    def replace_object(self, document: JSON) -> None:
        meta = document["metadata"]
        self._connection.execute(
            update(objects)
            .where(objects.c.namespace == meta["namespace"], objects.c.name == meta["name"])
            .values(**columns(document))
        )

    def delete_object(self, namespace: str, name: str) -> None:
        self._connection.execute(
            delete(objects).where(objects.c.namespace == namespace, objects.c.name == name)
        )

    def append_event(self, type_: EventType, document: JSON, *, version: int, retain: int) -> None:
        meta = document["metadata"]
        self._connection.execute(
            insert(events).values(
                resource_version=version,
                type=type_,
                namespace=meta["namespace"],
                name=meta["name"],
                recorded_at=utcnow(),
                document=document,
            )
        )
        self.pending.append((type_, document, version))
        horizon = version - retain
        if horizon > 0:
            result = self._connection.execute(
                delete(events).where(events.c.resource_version <= horizon)
            )
            if result.rowcount:
                self._connection.execute(
                    update(state).where(state.c.id == 1).values(compacted_version=horizon)
                )

    def objects_newest_first(self, namespace: str | None) -> list[JSON]:
        query = select(objects.c.document).order_by(objects.c.created_version.desc())
        if namespace is not None:
            query = query.where(objects.c.namespace == namespace)
        return [dict(row.document) for row in self._connection.execute(query)]

    def objects_by_version(self) -> list[JSON]:
        query = select(objects.c.document).order_by(objects.c.resource_version)
        return [dict(row.document) for row in self._connection.execute(query)]

    def events_after(self, cursor: int) -> list[Event]:
        query = (
            select(events.c.type, events.c.document, events.c.resource_version)
            .where(events.c.resource_version > cursor)
            .order_by(events.c.resource_version)
            .limit(EVENT_BATCH)
        )
        return [
            (cast(EventType, row.type), dict(row.document), int(row.resource_version))
            for row in self._connection.execute(query)
        ]
