"""The informer's resume rules, driven directly on a real ``MemoryStore``: ids, the
history, replay + subscribe as one step, the reasons for a reset, and a new epoch on
every relist after the first."""

from __future__ import annotations

import asyncio

import pytest
from informer_support import eventually, sandbox

from openova_sandbox.domain.model import Sandbox
from openova_sandbox.services.resources import (
    END_SLOW,
    RESET_EXPIRED,
    RESET_TOO_FAR,
    RESET_UNKNOWN,
    ResourceEvent,
    SandboxInformer,
    StreamEnd,
    Subscription,
)
from openova_sandbox.store.memory import MemoryStore


def everyone(s: Sandbox) -> bool:
    return True


async def drain(sub: Subscription, count: int) -> list[ResourceEvent]:
    out: list[ResourceEvent] = []
    while len(out) < count:
        item = await sub.next(timeout=15)
        assert isinstance(item, ResourceEvent), f"{len(out)} of {count}, then {item!r}"
        out.append(item)
    return out


def seq(ident: str) -> int:
    return int(ident.rpartition("-")[2])


async def started(informer: SandboxInformer) -> SandboxInformer:
    await informer.start()
    assert await informer.wait_synced(15)
    return informer


async def test_every_change_gets_the_next_number_of_one_epoch(store, informer_for):
    informer = await started(informer_for(store))
    start = informer.position
    assert start == f"{informer.epoch}-0"
    sub = informer.subscribe(everyone)
    assert sub.position == start and not sub.resumed and sub.reset is None
    created = await store.create(sandbox("a"))
    await store.update(created.with_meta(labels={"app": "b"}))
    await store.delete("acme", "a")
    events = await drain(sub, 3)
    assert [e.id for e in events] == [f"{informer.epoch}-{n}" for n in (1, 2, 3)]
    assert informer.position == events[-1].id


async def test_resume_replays_what_came_after_the_id_then_live_changes(store, informer_for):
    informer = await started(informer_for(store))
    watcher = informer.subscribe(everyone)
    for i in range(5):
        await store.create(sandbox(f"box{i}"))
    seen = await drain(watcher, 5)

    resumed = informer.subscribe(everyone, after=seen[1].id)
    assert resumed.resumed and resumed.reset is None and resumed.position == seen[1].id
    await store.create(sandbox("live"))
    got = await drain(resumed, 4)
    assert [e.object.name for e in got] == ["box2", "box3", "box4", "live"]
    assert [seq(e.id) for e in got] == [3, 4, 5, 6]
    assert await resumed.next(timeout=0.05) is None  # nothing twice

    caught_up = informer.subscribe(everyone, after=informer.position)
    assert caught_up.resumed and await caught_up.next(timeout=0.05) is None


async def test_replay_and_subscribe_are_one_step_under_concurrent_writes(store, informer_for):
    informer = await started(informer_for(store))
    total = 60

    async def writer() -> None:
        for i in range(total):
            await store.create(sandbox(f"w{i:03}"))
            await asyncio.sleep(0)  # let the informer fan out between writes

    writing = asyncio.create_task(writer())
    resumed: list[tuple[int, Subscription]] = []
    while not writing.done():  # resume from "now, minus a bit" while changes flow
        point = max(0, seq(informer.position) - 2)
        resumed.append((point, informer.subscribe(everyone, after=f"{informer.epoch}-{point}")))
        await asyncio.sleep(0)
    await writing
    await eventually(lambda: seq(informer.position) == total)
    assert len(resumed) > 5
    for point, sub in resumed:
        assert sub.resumed
        got = await drain(sub, total - point)
        # every change after the id, once, in order: no gap between replay and live
        assert [seq(e.id) for e in got] == list(range(point + 1, total + 1))


async def test_the_replay_applies_the_subscribers_filter(store, informer_for):
    informer = await started(informer_for(store))
    point = informer.position
    await store.create(sandbox("theirs", namespace="globex"))
    await store.create(sandbox("mine", namespace="acme"))
    await eventually(lambda: seq(informer.position) == 2)
    picky = informer.subscribe(lambda s: s.namespace == "acme", after=point)
    [only] = await drain(picky, 1)
    assert only.object.name == "mine" and seq(only.id) == 2
    assert await picky.next(timeout=0.05) is None


async def test_ids_that_cannot_resume_and_why(store, informer_for):
    informer = await started(informer_for(store, history_size=3, subscriber_capacity=2))
    point = informer.position
    for i in range(4):
        await store.create(sandbox(f"box{i}"))
    await eventually(lambda: seq(informer.position) == 4)
    epoch = informer.epoch
    other = ("a" if epoch[0] != "a" else "b") + epoch[1:]
    cases = {
        "": RESET_UNKNOWN,
        "garbage": RESET_UNKNOWN,
        f"{epoch}-01": RESET_UNKNOWN,
        f"{epoch}--1": RESET_UNKNOWN,
        f"{epoch.upper()}-4": RESET_UNKNOWN,
        f"{other}-4": RESET_UNKNOWN,
        f"{epoch}-5": RESET_UNKNOWN,  # never issued
        f"{epoch}-{10**30}": RESET_UNKNOWN,
        point: RESET_EXPIRED,  # box0 is no longer in a history of 3
        f"{epoch}-1": RESET_TOO_FAR,  # box1..box3 are kept, but 3 > a buffer of 2
    }
    for token, reason in cases.items():
        sub = informer.subscribe(everyone, after=token)
        assert (sub.reset, sub.resumed) == (reason, False), token
        assert sub.position == informer.position  # a fresh stream from now
        assert await sub.next(timeout=0.01) is None
    # filtered down to what the subscriber sees, the same replay fits
    picky = informer.subscribe(lambda s: s.name == "box3", after=f"{epoch}-1")
    assert picky.resumed and [e.object.name for e in await drain(picky, 1)] == ["box3"]
    two = informer.subscribe(everyone, after=f"{epoch}-2")
    assert [seq(e.id) for e in await drain(two, 2)] == [3, 4]


async def test_a_zero_history_resumes_only_from_the_newest_id(store, informer_for):
    informer = await started(informer_for(store, history_size=0))
    await store.create(sandbox("a"))
    await eventually(lambda: seq(informer.position) == 1)
    assert informer.subscribe(everyone, after=informer.position).resumed
    assert informer.subscribe(everyone, after=f"{informer.epoch}-0").reset == RESET_EXPIRED
    with pytest.raises(ValueError):
        SandboxInformer(store, history_size=-1)


async def test_the_first_list_keeps_the_epoch_so_an_early_id_resumes(store, informer_for):
    await store.create(sandbox("before"))
    informer = informer_for(store)
    early = informer.position  # handed out before the first list
    await started(informer)
    sub = informer.subscribe(everyone, after=early)
    assert sub.resumed
    [added] = await drain(sub, 1)
    assert (added.type, added.object.name, added.id) == ("ADDED", "before", f"{early[:-1]}1")


async def test_a_relist_after_the_store_comes_back_starts_a_new_epoch(store, informer_for):
    informer = await started(informer_for(store))
    through = informer.subscribe(everyone)  # stays subscribed across the relist
    await store.create(sandbox("a"))
    [first] = await drain(through, 1)
    old_epoch, old_id = informer.epoch, first.id

    await store.close()
    await eventually(lambda: not informer.live)
    # while the store is down nothing changes in the copy: the old id still resumes
    assert informer.subscribe(everyone, after=old_id).resumed
    relists = informer.relists
    await store.start()
    await store.create(sandbox("b"))
    await eventually(lambda: informer.relists > relists and informer.live)
    assert informer.epoch != old_epoch

    # a subscriber that stayed gets the relist's difference under the new epoch,
    # numbered on from the same counter
    [diff] = await drain(through, 1)
    assert diff.object.name == "b" and diff.id == f"{informer.epoch}-{seq(old_id) + 1}"
    late = informer.subscribe(everyone, after=old_id)
    assert late.reset == RESET_UNKNOWN and not late.resumed
    assert informer.subscribe(everyone, after=diff.id).resumed


async def test_a_compaction_relist_starts_a_new_epoch_too():
    store = MemoryStore(retain_events=2)
    await store.start()
    informer = SandboxInformer(store, backoff_initial=0.01, backoff_max=0.05)
    try:
        await started(informer)
        epoch = informer.epoch
        before = informer.position
        for i in range(10):  # memory writes do not yield: the watcher falls behind
            await store.create(sandbox(f"box{i}"))
        await eventually(lambda: len(informer.items()) == 10)
        assert informer.relists >= 2 and informer.epoch != epoch
        assert informer.subscribe(everyone, after=before).reset == RESET_UNKNOWN
    finally:
        await informer.stop()
        await store.close()


async def test_a_replay_that_fills_the_buffer_is_then_dropped_as_slow(store, informer_for):
    informer = await started(informer_for(store, subscriber_capacity=2))
    point = informer.position
    await store.create(sandbox("a"))
    await store.create(sandbox("b"))
    await eventually(lambda: seq(informer.position) == 2)
    full = informer.subscribe(everyone, after=point)  # exactly fits
    assert full.resumed
    await store.create(sandbox("c"))
    await eventually(lambda: seq(informer.position) == 3)
    a, b = await drain(full, 2)
    assert (a.object.name, b.object.name) == ("a", "b")
    assert await full.next(timeout=1) == StreamEnd(END_SLOW)
    # resuming from the last id it got picks up where it was dropped
    again = informer.subscribe(everyone, after=b.id)
    assert [e.object.name for e in await drain(again, 1)] == ["c"]
