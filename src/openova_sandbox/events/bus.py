"""The event-bus seam.

Publishing is best effort by contract: a create that succeeded is not undone because an
event could not be delivered (publishers catch and log). The embedded bus delivers
in-process to subscribers; ``events.nats_bus.NatsBus`` implements the same Protocol over
NATS JetStream for several API replicas (docs/mcp.md, "Live resources and events").
The product's vocabulary (``sandbox.created`` ...) is ``events.product``.

A subscriber gets a bounded queue of every event published after it subscribed (on
JetStream: every event the replica's consumer delivers, from any replica); a full queue
drops the event and logs it, never blocking the publisher.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

SANDBOX_REQUESTED = "sandbox_requested"

log = structlog.get_logger(__name__)


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """One event: its type (``sandbox.created``), a JSON-able payload, a unique id
    (consumers drop a redelivered id) and when it was made (RFC 3339, UTC)."""

    type: str
    payload: Mapping[str, Any]
    id: str = field(default_factory=_new_id)
    at: str = field(default_factory=_now)


class EventBus(Protocol):
    async def publish(self, event: Event) -> None: ...

    def subscribe(self) -> asyncio.Queue[Event]: ...

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None: ...


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A stable digest of a spec document (sorted keys), to tell requests apart."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class Fanout:
    """Local subscribers' queues: each gets every event offered, a full one drops it."""

    def __init__(self, max_queue: int = 1000) -> None:
        self.max_queue = max_queue
        self._subscribers: list[asyncio.Queue[Event]] = []

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self.max_queue)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def offer(self, event: Event) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("event dropped: subscriber queue full", event_type=event.type)


@dataclass
class InProcessBus:
    """Fan-out to subscriber queues; a full subscriber queue drops (and logs) the event."""

    max_queue: int = 1000
    _fanout: Fanout = field(init=False)

    def __post_init__(self) -> None:
        self._fanout = Fanout(self.max_queue)

    def subscribe(self) -> asyncio.Queue[Event]:
        return self._fanout.subscribe()

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._fanout.unsubscribe(queue)

    async def publish(self, event: Event) -> None:
        self._fanout.offer(event)
