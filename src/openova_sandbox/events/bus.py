"""The event-bus seam.

Publishing is best effort by contract: a create that succeeded is not undone because an
event could not be delivered. The embedded bus delivers in-process to subscribers (the
tests and, later, usage/audit consumers); a NATS JetStream bus will implement the same
Protocol for cluster mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

SANDBOX_REQUESTED = "sandbox_requested"

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Event:
    type: str
    payload: Mapping[str, Any]


class EventBus(Protocol):
    async def publish(self, event: Event) -> None: ...


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A stable digest of a spec document (sorted keys), to tell requests apart."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class InProcessBus:
    """Fan-out to subscriber queues; a full subscriber queue drops (and logs) the event."""

    max_queue: int = 1000
    _subscribers: list[asyncio.Queue[Event]] = field(default_factory=list)

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self.max_queue)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    async def publish(self, event: Event) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("event dropped: subscriber queue full", event_type=event.type)
