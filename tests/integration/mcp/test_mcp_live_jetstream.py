"""Live resources across API replicas over a real ``nats-server -js``: the embedded server
(replica A, ``SANDBOX_EVENTS_URL``) publishes its product events to JetStream, where
another replica's bus reads them; an event published by that other replica reaches an
MCP subscriber connected to A, within a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from openova_sandbox.events.bus import Event
from openova_sandbox.events.nats_bus import NatsBus
from openova_sandbox.events.product import (
    SANDBOX_CREATED,
    SANDBOX_DELETED,
    SANDBOX_READY,
    SESSION_STARTED,
    session_started,
)
from support.mcp_updates import subscriber
from support.mcp_world import SESSIONS, McpWorld, Person, mcp_world
from support.nats_server import NatsServer, running_nats

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed"),
]

ADA = Person("sub-ada", "ada@acme.com", "acme")


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    with running_nats() as server:
        yield server


@pytest.fixture
async def replica_b(nats_server: NatsServer) -> AsyncIterator[NatsBus]:
    bus = NatsBus(nats_server.url, replica="api-b")
    await bus.start()
    assert await bus.wait_ready(10)
    try:
        yield bus
    finally:
        await bus.stop()


@pytest.fixture
async def world(
    tmp_path: Path, nats_server: NatsServer, replica_b: NatsBus
) -> AsyncIterator[McpWorld]:
    async with mcp_world(
        tmp_path, isolation="none", events_url=nats_server.url, events_replica="api-a"
    ) as made:
        bus = made.deps.bus
        assert isinstance(bus, NatsBus) and bus.consumer == "api-a"
        assert await bus.wait_ready(10)
        yield made


class Seen:
    """Every event a replica's bus delivered, kept in order (events of one sandbox from
    different publishers need not come in causal order: the controller may say Ready
    before the create's own event is acknowledged)."""

    def __init__(self, bus: NatsBus) -> None:
        self.events: list[Event] = []
        self._queue = bus.subscribe()
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            self.events.append(await self._queue.get())

    async def first(self, type_: str, sandbox: str) -> Event:
        async with asyncio.timeout(10):
            while True:
                for event in self.events:
                    if event.type == type_ and event.payload.get("sandbox") == sandbox:
                        return event
                await asyncio.sleep(0.01)

    def close(self) -> None:
        self._task.cancel()


async def test_events_of_one_replica_reach_the_other_and_its_mcp_subscribers(
    world: McpWorld, replica_b: NatsBus
):
    on_b = Seen(replica_b)
    try:
        own = await world.create(ADA)
        # what A's sessions service and controller published, read by replica B's consumer
        created = await on_b.first(SANDBOX_CREATED, own.name)
        assert created.payload["namespace"] == "acme"
        assert created.payload["owner_email"] == "ada@acme.com"
        await world.ready(ADA, own.name)
        await on_b.first(SANDBOX_READY, own.name)

        terminals = f"openova://sandbox/{own.name}/terminals"
        async with subscriber(world, own) as (client, updates):
            await client.subscribe_resource(terminals)
            # replica B saw a terminal start (in Kubernetes mode: a pod's session)
            sent = time.monotonic()
            await replica_b.publish(session_started(own, "t-on-b", "shell"))
            arrived = await updates.next_for(terminals, after=sent)
            assert arrived - sent < 1.0
            # and A's own events keep arriving on B, the deletion included
            gone = await world.http.delete(f"{SESSIONS}/{own.name}", headers=world.auth(ADA))
            assert gone.status_code in (202, 204)
            await on_b.first(SANDBOX_DELETED, own.name)
        # one stream, one order for all: B's own publish came back to B as well
        await on_b.first(SESSION_STARTED, own.name)
    finally:
        on_b.close()
