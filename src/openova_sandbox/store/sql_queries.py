"""The SQL store's statements, one function per step of a transaction.

Every write transaction begins with :func:`next_version`: an ``UPDATE ... RETURNING`` on
the single counter row. The row lock it takes is held until commit, so writers run one
at a time and commit in resourceVersion order - a reader that sees version N has
already seen every version below N, which is what makes replaying the event table by
``resource_version > cursor`` complete. (A plain sequence would not: a transaction that
drew 7 could commit before the one that drew 6, and a watcher reading in between would
skip 6 forever.) A transaction that fails or changes nothing rolls back, and the counter
with it, so versions are dense: every version is exactly one event.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain.model import JSON, parse_time, utcnow
from .base import EventType
from .sql_schema import events, objects, state

EVENT_BATCH = 500
Event = tuple[EventType, JSON, int]  # type, document, resourceVersion


async def next_version(connection: AsyncConnection) -> int:
    row = (
        await connection.execute(
            update(state)
            .where(state.c.id == 1)
            .values(resource_version=state.c.resource_version + 1)
            .returning(state.c.resource_version)
        )
    ).one()
    return int(row.resource_version)


async def current_state(connection: AsyncConnection) -> tuple[int, int]:
    """(latest resourceVersion, compaction mark)."""
    row = (
        await connection.execute(
            select(state.c.resource_version, state.c.compacted_version).where(state.c.id == 1)
        )
    ).one()
    return int(row.resource_version), int(row.compacted_version)


async def load(connection: AsyncConnection, namespace: str, name: str) -> tuple[JSON, int] | None:
    """The stored document and its create version, or ``None``."""
    row = (
        await connection.execute(
            select(objects.c.document, objects.c.created_version).where(
                objects.c.namespace == namespace, objects.c.name == name
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return dict(row.document), int(row.created_version)


def _columns(document: JSON) -> dict[str, Any]:
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


async def insert_object(connection: AsyncConnection, document: JSON, *, version: int) -> None:
    meta = document["metadata"]
    await connection.execute(
        insert(objects).values(
            namespace=meta["namespace"],
            name=meta["name"],
            created_version=version,
            **_columns(document),
        )
    )


async def replace_object(connection: AsyncConnection, document: JSON) -> None:
    meta = document["metadata"]
    await connection.execute(
        update(objects)
        .where(objects.c.namespace == meta["namespace"], objects.c.name == meta["name"])
        .values(**_columns(document))
    )


async def delete_object(connection: AsyncConnection, namespace: str, name: str) -> None:
    await connection.execute(
        delete(objects).where(objects.c.namespace == namespace, objects.c.name == name)
    )


async def append_event(
    connection: AsyncConnection,
    type_: EventType,
    document: JSON,
    *,
    version: int,
    retain: int,
) -> None:
    """Record the change, then drop the events that fell out of the retention window."""
    meta = document["metadata"]
    await connection.execute(
        insert(events).values(
            resource_version=version,
            type=type_,
            namespace=meta["namespace"],
            name=meta["name"],
            recorded_at=utcnow(),
            document=document,
        )
    )
    horizon = version - retain
    if horizon > 0:
        result = await connection.execute(
            delete(events).where(events.c.resource_version <= horizon)
        )
        if result.rowcount:
            await connection.execute(
                update(state).where(state.c.id == 1).values(compacted_version=horizon)
            )


async def objects_newest_first(connection: AsyncConnection, namespace: str | None) -> list[JSON]:
    query = select(objects.c.document).order_by(objects.c.created_version.desc())
    if namespace is not None:
        query = query.where(objects.c.namespace == namespace)
    return [dict(row.document) for row in await connection.execute(query)]


async def objects_by_version(connection: AsyncConnection) -> list[JSON]:
    query = select(objects.c.document).order_by(objects.c.resource_version)
    return [dict(row.document) for row in await connection.execute(query)]


async def events_after(connection: AsyncConnection, cursor: int) -> list[Event]:
    query = (
        select(events.c.type, events.c.document, events.c.resource_version)
        .where(events.c.resource_version > cursor)
        .order_by(events.c.resource_version)
        .limit(EVENT_BATCH)
    )
    return [
        (cast(EventType, row.type), dict(row.document), int(row.resource_version))
        for row in await connection.execute(query)
    ]
