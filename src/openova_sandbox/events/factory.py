"""The event bus a process uses, from its settings: in-process unless
``SANDBOX_EVENTS_URL`` names a NATS server (then JetStream: ``events.nats_bus``)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..config import Settings
from .bus import EventBus, InProcessBus


def make_bus(settings: Settings) -> EventBus:
    """``InProcessBus`` (embedded default) or a ``NatsBus`` to be started and stopped
    with the process (it has ``start``/``stop``)."""
    if not settings.events_url:
        return InProcessBus()
    from .nats_bus import NatsBus  # nats-py only loads where it is used

    return NatsBus(
        settings.events_url, stream=settings.events_stream, replica=settings.events_replica
    )


@runtime_checkable
class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def lifecycle_parts(bus: EventBus) -> list[Startable]:
    """``[bus]`` when it must be started and stopped with the process, else ``[]``."""
    return [bus] if isinstance(bus, Startable) else []
