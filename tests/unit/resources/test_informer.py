"""The informer against the real in-memory store: sync, fan-out, compaction relists,
back-off while the store is down, slow subscribers, and stop."""

from __future__ import annotations

import asyncio

from informer_support import eventually, sandbox

from openova_sandbox.services.resources import (
    END_SHUTDOWN,
    END_SLOW,
    ResourceEvent,
    SandboxInformer,
    StreamEnd,
    Subscription,
)
from openova_sandbox.store.memory import MemoryStore


async def drain(sub: Subscription, count: int) -> list[ResourceEvent | StreamEnd]:
    out: list[ResourceEvent | StreamEnd] = []
    while len(out) < count:
        item = await sub.next(timeout=15)
        assert item is not None, f"only {len(out)} of {count} events arrived"
        out.append(item)
    return out


def names(informer: SandboxInformer) -> list[str]:
    return [s.name for s in informer.items()]


async def test_lists_then_follows_changes_in_order(store, informer_for):
    await store.create(sandbox("b"))
    await store.create(sandbox("a"))
    informer = informer_for(store)
    await informer.start()
    assert await informer.wait_synced(15)
    assert names(informer) == ["a", "b"]
    assert informer.age_seconds() == 0
    sub = informer.subscribe(lambda s: True)

    created = await store.create(sandbox("c"))
    await store.update(created.with_meta(labels={"app": "changed"}))
    await store.delete("acme", "a")
    events = await drain(sub, 3)
    assert [(e.type, e.object.name) for e in events if isinstance(e, ResourceEvent)] == [
        ("ADDED", "c"),
        ("MODIFIED", "c"),
        ("DELETED", "a"),
    ]
    assert names(informer) == ["b", "c"]
    assert informer.items()[1].metadata.labels == {"app": "changed"}
    assert informer.relists == 1


async def test_only_accepted_objects_reach_a_subscriber(store, informer_for):
    informer = informer_for(store)
    await informer.start()
    assert await informer.wait_synced(15)
    picky = informer.subscribe(lambda s: s.namespace == "globex")
    everyone = informer.subscribe(lambda s: True)
    await store.create(sandbox("theirs", namespace="acme"))
    await store.create(sandbox("mine", namespace="globex"))
    assert [e.object.name for e in await drain(everyone, 2)] == ["theirs", "mine"]
    [only] = await drain(picky, 1)
    assert isinstance(only, ResourceEvent) and only.object.name == "mine"
    assert await picky.next(timeout=0.05) is None


async def test_a_watch_that_falls_behind_compaction_relists_and_catches_up():
    store = MemoryStore(retain_events=2)
    await store.start()
    informer = SandboxInformer(store, backoff_initial=0.01, backoff_max=0.05)
    try:
        await informer.start()
        assert await informer.wait_synced(15)
        sub = informer.subscribe(lambda s: True)
        # memory writes do not yield to the loop: the watcher wakes up far behind
        for i in range(10):
            await store.create(sandbox(f"box{i}"))
        await store.delete("acme", "box0")
        await eventually(lambda: len(informer.items()) == 9)
        assert informer.relists >= 2
        assert names(informer) == [f"box{i}" for i in range(1, 10)]
        events = await drain(sub, 9)
        # the relist announces what the subscriber missed; box0 came and went unseen
        assert sorted(e.object.name for e in events if isinstance(e, ResourceEvent)) == [
            f"box{i}" for i in range(1, 10)
        ]
        await store.create(sandbox("after"))
        await eventually(lambda: "after" in names(informer))
        assert informer.age_seconds() == 0
    finally:
        await informer.stop()
        await store.close()


async def test_a_list_whose_newest_version_is_compacted_resyncs_from_a_snapshot():
    store = MemoryStore(retain_events=2)
    await store.start()
    await store.create(sandbox("keeper"))
    for i in range(8):  # history moves on through objects that no longer exist
        await store.create(sandbox(f"tmp{i}"))
        await store.delete("acme", f"tmp{i}")
    informer = SandboxInformer(store, backoff_initial=0.01, backoff_max=0.05)
    try:
        await informer.start()
        await eventually(lambda: informer.relists >= 2)
        assert names(informer) == ["keeper"]
        await store.create(sandbox("late"))
        await eventually(lambda: names(informer) == ["keeper", "late"])
    finally:
        await informer.stop()
        await store.close()


async def test_store_down_backs_off_reports_age_and_recovers(store, informer_for):
    now = [100.0]
    informer = informer_for(store, clock=lambda: now[0])
    await store.create(sandbox("a"))
    await informer.start()
    assert await informer.wait_synced(15)
    assert informer.age_seconds() == 0

    await store.close()  # the watch ends; lists fail until the store is back
    await eventually(lambda: not informer.live)
    assert informer.age_seconds() == 0  # lost just now, by this clock
    now[0] += 30
    assert informer.age_seconds() >= 30
    assert names(informer) == ["a"]  # the last known copy is still served
    relists = informer.relists

    await store.start()
    await store.create(sandbox("b"))
    await eventually(lambda: names(informer) == ["a", "b"])
    assert informer.relists > relists
    await eventually(lambda: informer.live)
    assert informer.age_seconds() == 0


async def test_a_slow_subscriber_is_dropped_without_holding_back_others(store, informer_for):
    informer = informer_for(store, subscriber_capacity=2)
    await informer.start()
    assert await informer.wait_synced(15)
    slow = informer.subscribe(lambda s: True)
    fast = informer.subscribe(lambda s: True)
    got: list[str] = []
    for i in range(5):
        await store.create(sandbox(f"box{i}"))
        for item in await drain(fast, 1):
            assert isinstance(item, ResourceEvent)
            got.append(item.object.name)
    assert got == [f"box{i}" for i in range(5)]
    first, second, end = await drain(slow, 3)
    assert isinstance(first, ResourceEvent) and isinstance(second, ResourceEvent)
    assert end == StreamEnd(END_SLOW)
    assert informer.subscriber_count == 1


async def test_stop_ends_every_subscription(store, informer_for):
    informer = informer_for(store)
    await informer.start()
    assert await informer.wait_synced(15)
    sub = informer.subscribe(lambda s: True)
    waiting = asyncio.create_task(sub.next(timeout=10))
    await asyncio.sleep(0.01)
    await informer.stop()
    assert await asyncio.wait_for(waiting, 15) == StreamEnd(END_SHUTDOWN)
    assert not informer.running
    late = informer.subscribe(lambda s: True)
    assert await late.next(timeout=1) == StreamEnd(END_SHUTDOWN)
