"""The Store contract: every backend keeps the apiserver's rules (store/base.py).

Each test runs against ``memory``, ``sqlite`` and ``postgres`` (see conftest.py).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from openova_sandbox.domain.errors import AlreadyExists, Conflict, Invalid, NotFound
from openova_sandbox.domain.model import Condition, Sandbox, SandboxStatus
from openova_sandbox.store.base import Store, WatchEvent

if TYPE_CHECKING:
    from conftest import StoreFactory

MakeSandbox = Callable[..., Sandbox]


async def take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    async with asyncio.timeout(15):
        while len(out) < count:
            out.append(await anext(events))
    return out


def summary(events: list[WatchEvent]) -> list[tuple[str, str, str]]:
    return [(e.type, e.object.name, e.resource_version) for e in events]


# --- create / get ---------------------------------------------------------------------


async def test_create_assigns_identity(store: Store, make_sandbox: MakeSandbox) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    created = await store.create(make_sandbox("alpha", labels={"a": "1"}))
    meta = created.metadata
    assert uuid.UUID(meta.uid).version == 4
    assert re.fullmatch(r"[1-9][0-9]*", meta.resource_version)
    assert meta.generation == 1
    assert meta.creation_timestamp is not None
    assert before <= meta.creation_timestamp <= datetime.now(UTC) + timedelta(seconds=1)
    assert meta.deletion_timestamp is None
    assert dict(meta.labels) == {"a": "1"}
    assert await store.get("team-a", "alpha") == created


async def test_create_ignores_system_fields_and_status(
    store: Store, make_sandbox: MakeSandbox
) -> None:
    forged = make_sandbox("alpha").with_meta(
        uid="not-a-uid",
        resource_version="999",
        generation=7,
        deletion_timestamp=datetime(2020, 1, 1, tzinfo=UTC),
        creation_timestamp=datetime(2020, 1, 1, tzinfo=UTC),
    )
    forged = forged.with_status(SandboxStatus(phase="Ready", sessions=2))
    created = await store.create(forged)
    assert created.metadata.uid != "not-a-uid"
    assert created.metadata.resource_version != "999"
    assert created.metadata.generation == 1
    assert created.metadata.deletion_timestamp is None
    assert created.metadata.creation_timestamp != datetime(2020, 1, 1, tzinfo=UTC)
    assert created.status == SandboxStatus()


async def test_uids_are_unique(store: Store, make_sandbox: MakeSandbox) -> None:
    uids = {(await store.create(make_sandbox(f"s{i}"))).metadata.uid for i in range(5)}
    assert len(uids) == 5


async def test_duplicate_create_is_already_exists(store: Store, make_sandbox: MakeSandbox) -> None:
    await store.create(make_sandbox("alpha"))
    with pytest.raises(AlreadyExists) as caught:
        await store.create(make_sandbox("alpha", email="other@acme.com"))
    assert caught.value.detail == 'sandbox "alpha" already exists in namespace "team-a"'
    assert caught.value.code == "already-exists"
    # the same name in another namespace is another object
    other = await store.create(make_sandbox("alpha", "team-b"))
    assert other.namespace == "team-b"
    assert (await store.get("team-a", "alpha")).spec.owner_email == "dev@acme.com"


async def test_get_missing_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.get("team-a", "ghost")
    assert caught.value.detail == 'sandbox "ghost" not found in namespace "team-a"'


async def test_create_requires_name_and_namespace(store: Store, make_sandbox: MakeSandbox) -> None:
    with pytest.raises(Invalid):
        await store.create(make_sandbox(""))
    with pytest.raises(Invalid):
        await store.create(make_sandbox("alpha", ""))


async def test_resource_version_is_one_global_increasing_counter(
    store: Store, make_sandbox: MakeSandbox
) -> None:
    seen: list[int] = []
    a = await store.create(make_sandbox("a"))
    seen.append(int(a.metadata.resource_version))
    b = await store.create(make_sandbox("b", "team-b"))
    seen.append(int(b.metadata.resource_version))
    a2 = await store.update(a.with_meta(labels={"x": "1"}))
    assert a2 is not None
    seen.append(int(a2.metadata.resource_version))
    b2 = await store.update_status(b.with_status(SandboxStatus(phase="Pending")))
    seen.append(int(b2.metadata.resource_version))
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)


# --- update / update_status -----------------------------------------------------------


async def test_update_replaces_metadata_and_spec_but_not_status(
    store: Store, make_sandbox: MakeSandbox
) -> None:
    created = await store.create(make_sandbox("alpha", labels={"a": "1"}))
    status = await store.update_status(created.with_status(SandboxStatus(phase="Pending")))
    changed = status.with_meta(
        labels={"b": "2"}, annotations={"note": "hi"}, finalizers=("example.com/hold",)
    )
    changed = replace(changed, spec=replace(changed.spec, repos=("acme/app",)))
    changed = changed.with_status(SandboxStatus(phase="Ready"))  # ignored by update
    updated = await store.update(changed)
    assert updated is not None
    assert dict(updated.metadata.labels) == {"b": "2"}
    assert dict(updated.metadata.annotations) == {"note": "hi"}
    assert updated.metadata.finalizers == ("example.com/hold",)
    assert updated.spec.repos == ("acme/app",)
    assert updated.status.phase == "Pending"
    assert updated.metadata.uid == created.metadata.uid
    assert updated.metadata.creation_timestamp == created.metadata.creation_timestamp
    assert int(updated.metadata.resource_version) > int(status.metadata.resource_version)
    assert await store.get("team-a", "alpha") == updated


async def test_generation_bumps_only_on_spec_change(
    store: Store, make_sandbox: MakeSandbox
) -> None:
    created = await store.create(make_sandbox("alpha"))
    labelled = await store.update(created.with_meta(labels={"x": "y"}))
    assert labelled is not None
    assert labelled.metadata.generation == 1
    status = await store.update_status(labelled.with_status(SandboxStatus(phase="Pending")))
    assert status.metadata.generation == 1
    respec = await store.update(
        replace(status, spec=replace(status.spec, agent_catalogue=("opencode",)))
    )
    assert respec is not None
    assert respec.metadata.generation == 2
    again = await store.update(replace(respec, spec=replace(respec.spec, repos=("acme/x",))))
    assert again is not None
    assert again.metadata.generation == 3


async def test_noop_update_keeps_resource_version(store: Store, make_sandbox: MakeSandbox) -> None:
    created = await store.create(make_sandbox("alpha", labels={"a": "1"}))
    same = await store.update(created)
    assert same == created
    same_status = await store.update_status(created)
    assert same_status == created


async def test_stale_resource_version_is_conflict(store: Store, make_sandbox: MakeSandbox) -> None:
    created = await store.create(make_sandbox("alpha"))
    fresh = await store.update(created.with_meta(labels={"v": "1"}))
    assert fresh is not None
    with pytest.raises(Conflict) as caught:
        await store.update(created.with_meta(labels={"v": "2"}))
    assert caught.value.code == "conflict"
    assert "alpha" in caught.value.detail
    with pytest.raises(Conflict):
        await store.update_status(created.with_status(SandboxStatus(phase="Ready")))
    with pytest.raises(Conflict):
        await store.update(created.with_meta(resource_version=""))
    assert await store.get("team-a", "alpha") == fresh


async def test_update_missing_is_not_found(store: Store, make_sandbox: MakeSandbox) -> None:
    ghost = make_sandbox("ghost").with_meta(resource_version="1")
    with pytest.raises(NotFound):
        await store.update(ghost)
    with pytest.raises(NotFound):
        await store.update_status(ghost)


async def test_update_status_changes_only_status(store: Store, make_sandbox: MakeSandbox) -> None:
    created = await store.create(make_sandbox("alpha", labels={"a": "1"}))
    attempt = created.with_meta(labels={"hijack": "1"}, finalizers=("x/y",))
    attempt = replace(attempt, spec=replace(attempt.spec, owner_email="evil@acme.com"))
    status = SandboxStatus(
        phase="Provisioning",
        conditions=(Condition("NamespaceReady", "True", "Created", "ok"),),
        sessions=1,
        observed_generation=1,
    )
    updated = await store.update_status(attempt.with_status(status))
    assert updated.status == status
    assert dict(updated.metadata.labels) == {"a": "1"}
    assert updated.metadata.finalizers == ()
    assert updated.spec == created.spec
    assert updated.metadata.generation == 1
    assert await store.get("team-a", "alpha") == updated


async def test_concurrent_updates_with_same_version_one_wins(
    store_factory: StoreFactory, make_sandbox: MakeSandbox
) -> None:
    first = await store_factory.open()
    second = await store_factory.open()  # a second handle: another engine for SQL
    current = await first.create(make_sandbox("alpha"))
    for round_ in range(8):
        results = await asyncio.gather(
            first.update(current.with_meta(labels={"winner": f"first-{round_}"})),
            second.update(current.with_meta(labels={"winner": f"second-{round_}"})),
            first.update_status(current.with_status(SandboxStatus(sessions=round_ + 1))),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Sandbox)]
        losers = [r for r in results if isinstance(r, Conflict)]
        assert len(winners) == 1, results
        assert len(losers) == 2, results
        current = await second.get("team-a", "alpha")
        assert current == winners[0]


async def test_concurrent_creates_of_one_name_one_wins(
    store_factory: StoreFactory, make_sandbox: MakeSandbox
) -> None:
    first = await store_factory.open()
    second = await store_factory.open()
    results = await asyncio.gather(
        *(
            (first if i % 2 else second).create(make_sandbox("alpha", email=f"u{i}@acme.com"))
            for i in range(6)
        ),
        return_exceptions=True,
    )
    assert len([r for r in results if isinstance(r, Sandbox)]) == 1, results
    assert len([r for r in results if isinstance(r, AlreadyExists)]) == 5, results


# --- delete and finalizers ------------------------------------------------------------


async def test_delete_without_finalizers_removes(store: Store, make_sandbox: MakeSandbox) -> None:
    await store.create(make_sandbox("alpha"))
    assert await store.delete("team-a", "alpha") is None
    with pytest.raises(NotFound):
        await store.get("team-a", "alpha")
    with pytest.raises(NotFound) as caught:
        await store.delete("team-a", "alpha")
    assert caught.value.detail == 'sandbox "alpha" not found in namespace "team-a"'
    # the name is free again, with a new identity
    again = await store.create(make_sandbox("alpha"))
    assert again.metadata.generation == 1


async def test_finalizer_deletion_flow(store: Store, make_sandbox: MakeSandbox) -> None:
    created = await store.create(
        make_sandbox("alpha", finalizers=("sandbox.openova.io/finalizer", "example.com/other"))
    )
    marked = await store.delete("team-a", "alpha")
    assert marked is not None
    assert marked.metadata.deletion_timestamp is not None
    assert int(marked.metadata.resource_version) > int(created.metadata.resource_version)
    assert await store.get("team-a", "alpha") == marked

    # deleting again changes nothing: the mark is set once
    again = await store.delete("team-a", "alpha")
    assert again == marked

    # status can still be written while the finalizers run
    status = await store.update_status(marked.with_status(SandboxStatus(phase="Ready")))
    assert status.metadata.deletion_timestamp == marked.metadata.deletion_timestamp

    # releasing one finalizer keeps the object
    partial = await store.update(status.with_meta(finalizers=("example.com/other",)))
    assert partial is not None
    assert partial.metadata.deletion_timestamp == marked.metadata.deletion_timestamp

    # releasing the last one removes it
    assert await store.update(partial.with_meta(finalizers=())) is None
    with pytest.raises(NotFound):
        await store.get("team-a", "alpha")
    assert await store.list() == []


async def test_removing_finalizers_of_unmarked_object_keeps_it(
    store: Store, make_sandbox: MakeSandbox
) -> None:
    created = await store.create(make_sandbox("alpha", finalizers=("x/y",)))
    updated = await store.update(created.with_meta(finalizers=()))
    assert updated is not None
    assert updated.metadata.finalizers == ()
    assert await store.get("team-a", "alpha") == updated


# --- list -----------------------------------------------------------------------------


async def test_list_newest_first_with_namespace_and_labels(
    store: Store, make_sandbox: MakeSandbox
) -> None:
    await store.create(make_sandbox("one", labels={"org": "acme", "agent": "aider"}))
    await store.create(make_sandbox("two", "team-b", labels={"org": "acme", "agent": "opencode"}))
    await store.create(make_sandbox("three", labels={"org": "globex", "agent": "aider"}))
    await store.create(make_sandbox("four", labels={"org": "acme", "agent": "aider"}))
    # an update does not move an object in the order
    one = await store.get("team-a", "one")
    await store.update(one.with_meta(labels={**one.metadata.labels, "touched": "yes"}))

    assert [s.name for s in await store.list()] == ["four", "three", "two", "one"]
    assert [s.name for s in await store.list("team-a")] == ["four", "three", "one"]
    assert [s.name for s in await store.list("team-b")] == ["two"]
    assert [s.name for s in await store.list("nowhere")] == []
    assert [s.name for s in await store.list(labels={"org": "acme"})] == ["four", "two", "one"]
    assert [s.name for s in await store.list(labels={"org": "acme", "agent": "aider"})] == [
        "four",
        "one",
    ]
    assert [s.name for s in await store.list("team-a", labels={"agent": "aider"})] == [
        "four",
        "three",
        "one",
    ]
    assert [s.name for s in await store.list(labels={"touched": "yes"})] == ["one"]
    assert await store.list(labels={"org": "ACME"}) == []
    assert await store.list(labels={"missing": ""}) == []


# --- unknown fields -------------------------------------------------------------------


async def test_unknown_fields_round_trip(store: Store) -> None:
    document = {
        "apiVersion": "sandbox.openova.io/v1",
        "kind": "Sandbox",
        "metadata": {
            "name": "alpha",
            "namespace": "team-a",
            # A metadata field this model has no attribute for. (Kubernetes prunes unknown
            # metadata keys, so the sample is a real ObjectMeta field without side effects:
            # ownerReferences would get the object garbage-collected there.)
            "generateName": "alpha-",
        },
        "spec": {
            "owner": {"email": "dev@acme.com", "orgRef": {"slug": "acme", "tier": "gold"}},
            "quota": {"cpu": "2", "memory": "4Gi", "storage": "10Gi", "concurrentSessions": 2},
            "planId": "sandbox-pro",
            "idleScaling": {"enabled": False, "timeoutMinutes": 45},
            "capabilities": ["git.*", "shell.run"],
            "futureField": {"nested": [1, 2.5, None, True, "ü"]},
        },
    }
    created = await store.create(Sandbox.from_dict(document))
    got = (await store.get("team-a", "alpha")).to_dict()
    assert got["metadata"]["generateName"] == "alpha-"
    spec = got["spec"]
    for key in ("planId", "idleScaling", "capabilities", "futureField"):
        assert spec[key] == document["spec"][key]  # type: ignore[index]

    status = created.to_dict()["status"]
    status.update({"phase": "Ready", "gpu": {"model": "none"}, "notes": ["a", "b"]})
    raw = created.to_dict()
    raw["status"] = status
    updated = await store.update_status(Sandbox.from_dict(raw))
    for stored in (await store.get("team-a", "alpha"), (await store.list())[0], updated):
        out = stored.to_dict()
        assert out["status"]["gpu"] == {"model": "none"}
        assert out["status"]["notes"] == ["a", "b"]
        assert out["spec"]["futureField"] == {"nested": [1, 2.5, None, True, "ü"]}
        assert out["metadata"]["generateName"] == "alpha-"

    # an update keeps what it was given (status extras are untouched by update)
    raw = updated.to_dict()
    raw["spec"]["futureField"] = {"nested": []}
    raw["metadata"]["generateName"] = "renamed-"
    after = await store.update(Sandbox.from_dict(raw))
    assert after is not None
    out = after.to_dict()
    assert out["spec"]["futureField"] == {"nested": []}
    assert out["metadata"]["generateName"] == "renamed-"
    assert out["status"]["gpu"] == {"model": "none"}
    assert after.metadata.generation == 2


async def test_returned_objects_are_not_shared(store: Store, make_sandbox: MakeSandbox) -> None:
    created = await store.create(make_sandbox("alpha", labels={"a": "1"}))
    created.metadata.labels["a"] = "mutated"  # type: ignore[index]
    assert dict((await store.get("team-a", "alpha")).metadata.labels) == {"a": "1"}


# --- watch ----------------------------------------------------------------------------


async def test_watch_from_now_lists_then_follows(store: Store, make_sandbox: MakeSandbox) -> None:
    a = await store.create(make_sandbox("a"))
    b = await store.create(make_sandbox("b", "team-b"))
    a = await store.update(a.with_meta(labels={"x": "1"}))  # type: ignore[assignment]
    watch = store.watch()
    try:
        initial = await take(watch, 2)
        assert [e.type for e in initial] == ["ADDED", "ADDED"]
        assert {e.object.name for e in initial} == {"a", "b"}
        for event in initial:
            assert event.resource_version == event.object.metadata.resource_version
        assert (await store.get("team-a", "a")) in [e.object for e in initial]

        c = await store.create(make_sandbox("c"))
        b2 = await store.update_status(b.with_status(SandboxStatus(phase="Ready")))
        assert await store.delete("team-a", "a") is None
        live = await take(watch, 3)
        assert [(e.type, e.object.name) for e in live] == [
            ("ADDED", "c"),
            ("MODIFIED", "b"),
            ("DELETED", "a"),
        ]
        assert live[0].object == c
        assert live[1].object == b2
        versions = [int(e.resource_version) for e in live]
        assert versions == sorted(versions)
        assert versions[0] > int(a.metadata.resource_version)
        # DELETED carries the last state, at the version of the deletion
        assert live[2].object.metadata.uid == a.metadata.uid
        assert live[2].object.metadata.labels == {"x": "1"}
        assert live[2].object.metadata.resource_version == live[2].resource_version
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_watch_resumes_after_a_resource_version(
    store: Store, make_sandbox: MakeSandbox
) -> None:
    a = await store.create(make_sandbox("a"))
    marker = a.metadata.resource_version
    b = await store.create(make_sandbox("b", finalizers=("x/y",)))
    a2 = await store.update(a.with_meta(annotations={"k": "v"}))
    marked = await store.delete("team-a", "b")
    assert a2 is not None and marked is not None
    gone = await store.update(marked.with_meta(finalizers=()))
    assert gone is None

    watch = store.watch(marker)
    try:
        events = await take(watch, 4)
        assert [(e.type, e.object.name) for e in events] == [
            ("ADDED", "b"),
            ("MODIFIED", "a"),
            ("MODIFIED", "b"),
            ("DELETED", "b"),
        ]
        assert events[0].object.metadata.uid == b.metadata.uid
        assert events[1].object == a2
        assert events[2].object == marked
        assert events[3].object.metadata.finalizers == ()
        # resuming from the middle replays only what came after
        tail = store.watch(events[1].resource_version)
        try:
            assert summary(await take(tail, 2)) == summary(events[2:])
        finally:
            await tail.aclose()  # type: ignore[attr-defined]
        # from "0": the whole history
        full = store.watch("0")
        try:
            history = await take(full, 5)
            assert [e.type for e in history] == [
                "ADDED",
                "ADDED",
                "MODIFIED",
                "MODIFIED",
                "DELETED",
            ]
            assert history[0].object.metadata.uid == a.metadata.uid
        finally:
            await full.aclose()  # type: ignore[attr-defined]
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_many_watchers_see_the_same_changes(store: Store, make_sandbox: MakeSandbox) -> None:
    start = await store.create(make_sandbox("seed"))
    watches = [store.watch(start.metadata.resource_version) for _ in range(4)]
    collectors = [asyncio.create_task(take(w, 6)) for w in watches]
    await asyncio.sleep(0)  # let every watcher start waiting
    for i in range(3):
        created = await store.create(make_sandbox(f"w{i}"))
        await store.update(created.with_meta(labels={"i": str(i)}))
    results = await asyncio.gather(*collectors)
    expected = summary(results[0])
    assert [t for t, _, _ in expected] == ["ADDED", "MODIFIED"] * 3
    for result in results[1:]:
        assert summary(result) == expected
    for watch in watches:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_a_watch_closed_while_its_consumer_holds_the_listing_just_ends(
    store: Store, make_sandbox: MakeSandbox
) -> None:
    # The store closes between the initial listing and the follow phase: the consumer
    # gets the end of the stream, not an error from a client that went away.
    created = await store.create(make_sandbox("a"))
    watch = store.watch()
    listed = await anext(watch)
    assert (listed.type, listed.object) == ("ADDED", created)
    await store.close()
    async with asyncio.timeout(10):
        rest = [event async for event in watch]
    assert rest == []


async def test_watch_ends_when_store_closes(store: Store, make_sandbox: MakeSandbox) -> None:
    await store.create(make_sandbox("a"))

    seen: list[list[WatchEvent]] = [[], [], []]

    async def consume(into: list[WatchEvent]) -> list[WatchEvent]:
        async for event in store.watch():
            into.append(event)
        return into

    consumers = [asyncio.create_task(consume(into)) for into in seen]
    async with asyncio.timeout(10):  # every consumer is watching before the store closes
        while not all(seen):
            await asyncio.sleep(0.01)
    await store.close()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*consumers)
    for events in results:
        assert [(e.type, e.object.name) for e in events] == [("ADDED", "a")]


async def test_watch_from_a_compacted_version_is_gone(
    store_factory: StoreFactory, make_sandbox: MakeSandbox
) -> None:
    store = await store_factory.open(retain_events=3)
    current = await store.create(make_sandbox("a"))
    first = current.metadata.resource_version
    for i in range(10):
        updated = await store.update(current.with_meta(labels={"i": str(i)}))
        assert updated is not None
        current = updated
    with pytest.raises(Conflict) as caught:
        await anext(store.watch(first))
    assert caught.value.code == "resource-version-too-old"
    with pytest.raises(Conflict):
        await anext(store.watch("0"))
    # a recent version still replays, and a fresh watch (since=None) always works
    recent = store.watch(str(int(current.metadata.resource_version) - 1))
    try:
        [event] = await take(recent, 1)
        assert event.object == current
    finally:
        await recent.aclose()  # type: ignore[attr-defined]
    fresh = store.watch()
    try:
        [event] = await take(fresh, 1)
        assert (event.type, event.object) == ("ADDED", current)
    finally:
        await fresh.aclose()  # type: ignore[attr-defined]


async def test_watch_rejects_a_malformed_version(store: Store) -> None:
    for bad in ("abc", "-1", "1.5", ""):
        with pytest.raises(Invalid) as caught:
            await anext(store.watch(bad))
        assert caught.value.code == "invalid-resource-version"


async def test_ping(store: Store) -> None:
    await store.ping()
