"""The JetStream event bus against a real ``nats-server -js`` (support/nats_server.py):
two API replicas share one stream, each sees what the other publishes; a restart of the
server loses no event JetStream acknowledged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from openova_sandbox.events.bus import Event
from openova_sandbox.events.nats_bus import EventNotPublished, NatsBus, consumer_name, safe_url
from openova_sandbox.events.product import SANDBOX_CREATED, SESSION_STARTED
from support.nats_server import NatsServer, running_nats


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    with running_nats() as server:
        yield server


async def started(bus: NatsBus) -> NatsBus:
    await bus.start()
    assert await bus.wait_ready(10), f"bus {bus.consumer} not ready"
    return bus


async def collect(queue: asyncio.Queue[Event], ids: set[str], timeout: float) -> list[Event]:
    """Every event from ``queue`` until each of ``ids`` arrived (or the timeout)."""
    got: list[Event] = []
    deadline = time.monotonic() + timeout
    while not ids <= {e.id for e in got}:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                got.append(await queue.get())
        except TimeoutError:
            break
    return got


def event(n: int, type_: str = SANDBOX_CREATED) -> Event:
    return Event(type_, {"namespace": "acme", "sandbox": f"s{n}", "n": n})


async def test_a_subscriber_on_one_replica_sees_events_published_on_the_other(nats_server):
    a = await started(NatsBus(nats_server.url, replica="api-a"))
    b = await started(NatsBus(nats_server.url, replica="api-b"))
    try:
        on_a, on_b = a.subscribe(), b.subscribe()
        sent = [event(1), event(2, SESSION_STARTED)]
        for e in sent:
            await a.publish(e)
        from_b = await collect(on_b, {e.id for e in sent}, 5)
        assert [(e.id, e.type, dict(e.payload)) for e in from_b] == [
            (e.id, e.type, dict(e.payload)) for e in sent
        ]
        # the publisher's own replica gets them too, through the stream (one order for all)
        from_a = await collect(on_a, {e.id for e in sent}, 5)
        assert [e.id for e in from_a] == [e.id for e in sent]
        # and the other way round
        # and the other way round, to a consumer that is waiting for its next event: it
        # gets it at once, not when its pull expires
        back = event(3)
        sent = time.monotonic()
        await b.publish(back)
        assert [e.id for e in await collect(on_a, {back.id}, 5)] == [back.id]
        assert time.monotonic() - sent < 0.5
    finally:
        await a.stop()
        await b.stop()


async def test_a_restart_of_nats_server_loses_no_acknowledged_event(nats_server):
    a = await started(NatsBus(nats_server.url, replica="api-a", publish_timeout=20))
    b = await started(NatsBus(nats_server.url, replica="api-b"))
    await b.stop()  # b's durable consumer stays; it is away while everything happens
    # c stays up through the restart: its client reconnects and its consumer goes on
    c = await started(NatsBus(nats_server.url, replica="api-c"))
    on_c = c.subscribe()
    acked: list[str] = []
    failed: list[str] = []

    async def publish(n: int) -> None:
        e = event(n)
        try:
            await a.publish(e)
        except EventNotPublished:
            failed.append(e.id)
        else:
            acked.append(e.id)

    try:
        for n in range(20):
            await publish(n)
        assert len(acked) == 20
        nats_server.stop()  # SIGTERM, waited for: the server is gone
        # these start while the server is down and are retried until it is back
        during = asyncio.gather(*(publish(n) for n in range(20, 30)))
        await asyncio.to_thread(nats_server.start)
        await during
        for n in range(30, 35):
            await publish(n)
        assert failed == [], "publishes across a restart are retried until acknowledged"
        assert len(acked) == 35
        # b comes back under the same name: it resumes after the last event it acknowledged
        b2 = NatsBus(nats_server.url, replica="api-b")
        queue = b2.subscribe()
        await started(b2)
        got = await collect(queue, set(acked), 15)
        ids = [e.id for e in got]
        assert set(acked) <= set(ids), f"lost: {sorted(set(acked) - set(ids))}"
        assert len(ids) == len(set(ids)), "an event was delivered twice"
        await b2.stop()
        through = [e.id for e in await collect(on_c, set(acked), 15)]
        assert set(acked) <= set(through), f"lost: {sorted(set(acked) - set(through))}"
        assert len(through) == len(set(through))
    finally:
        await a.stop()
        await c.stop()


async def test_publish_without_a_server_says_why_within_its_timeout():
    bus = NatsBus("nats://user:secret@127.0.0.1:9", replica="lonely", publish_timeout=0.5)
    await bus.start()
    try:
        started_at = time.monotonic()
        with pytest.raises(EventNotPublished) as info:
            await bus.publish(event(1))
        assert time.monotonic() - started_at < 3
        assert "nats://127.0.0.1:9" in str(info.value) and "secret" not in str(info.value)
    finally:
        await bus.stop()


def test_names():
    assert consumer_name("sandbox-api-7d9f.example") == "sandbox-api-7d9f-example"
    assert consumer_name(" ") == "replica"
    assert safe_url("nats://u:p@nats.svc:4222") == "nats://nats.svc:4222"
    with pytest.raises(ValueError, match="stream name"):
        NatsBus("nats://x", stream="a.b")


async def test_an_event_published_twice_is_stored_once(nats_server):
    """What a publish retried after a lost acknowledgement does: the same id again."""
    a = await started(NatsBus(nats_server.url, replica="api-a"))
    try:
        queue = a.subscribe()
        twice, fence = event(1), event(2)
        await a.publish(twice)
        await a.publish(twice)
        await a.publish(fence)
        got = await collect(queue, {fence.id}, 5)
        assert [e.id for e in got] == [twice.id, fence.id]
        assert a.redelivered == 0  # JetStream kept one copy: nothing came twice
    finally:
        await a.stop()
