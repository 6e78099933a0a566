"""The runner under stress: expired watches, failing watches, racing writers, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from controller_support import (
    RecordingTerminals,
    StallingGitServer,
    new_sandbox,
    phase,
    wait_for,
)

from openova_sandbox.controller.local import workspace_path
from openova_sandbox.controller.runner import EmbeddedController
from openova_sandbox.domain.errors import BackendUnavailable
from openova_sandbox.domain.model import Sandbox
from openova_sandbox.store.base import WatchEvent
from openova_sandbox.store.memory import MemoryStore
from support.processes import processes_mentioning


async def test_an_expired_watch_is_replaced_by_a_fresh_listing(
    terminals: RecordingTerminals, data_dir: Path, git_base: Path
) -> None:
    # Keeping one event means any watcher that is not instantly up to date gets
    # Conflict(resource-version-too-old): the controller must list again, not die.
    store = MemoryStore(retain_events=1)
    await store.start()
    ctl = EmbeddedController(
        store, terminals, data_dir=data_dir, git_base_url=git_base.as_uri(), sweep_interval=0.2
    )
    await ctl.start()
    try:
        await ctl.wait_idle()
        await asyncio.sleep(0.05)  # the watcher now waits for the next change
        for i in range(4):  # no await yields in between: the watcher falls behind
            await store.create(new_sandbox(f"b{i}"))
        for i in range(4):
            await wait_for(store, ("acme", f"b{i}"), phase("Ready"))
    finally:
        await ctl.stop()
        await store.close()


class FlakyWatchStore:
    """The real MemoryStore, except that its first watch breaks after one event
    (as a dropped database connection would): the controller must resume, not relist."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.watch_calls: list[str | None] = []
        self.list_calls = 0

    async def get(self, namespace: str, name: str) -> Sandbox:
        return await self.inner.get(namespace, name)

    async def list(
        self, namespace: str | None = None, *, labels: Mapping[str, str] | None = None
    ) -> list[Sandbox]:
        self.list_calls += 1
        return await self.inner.list(namespace, labels=labels)

    async def update(self, sandbox: Sandbox) -> Sandbox | None:
        return await self.inner.update(sandbox)

    async def update_status(self, sandbox: Sandbox) -> Sandbox:
        return await self.inner.update_status(sandbox)

    def watch(self, since: str | None = None) -> AsyncIterator[WatchEvent]:
        self.watch_calls.append(since)
        return self._watch(since, fail=len(self.watch_calls) == 1)

    async def _watch(self, since: str | None, *, fail: bool) -> AsyncIterator[WatchEvent]:
        seen = 0
        async for event in self.inner.watch(since):
            yield event
            seen += 1
            if fail and seen == 1:
                raise BackendUnavailable("connection lost")


async def test_a_broken_watch_resumes_from_the_last_resource_version(
    terminals: RecordingTerminals, data_dir: Path, git_base: Path
) -> None:
    inner = MemoryStore()
    await inner.start()
    store = FlakyWatchStore(inner)
    first = await inner.create(new_sandbox("first"))
    ctl = EmbeddedController(
        store, terminals, data_dir=data_dir, git_base_url=git_base.as_uri(), sweep_interval=0.2
    )
    await ctl.start()
    try:
        await inner.create(new_sandbox("second"))
        await wait_for(inner, ("acme", "first"), phase("Ready"))
        await wait_for(inner, ("acme", "second"), phase("Ready"))
    finally:
        await ctl.stop()
        await inner.close()
    assert store.watch_calls[0] is None
    resumed = store.watch_calls[1]
    assert resumed is not None  # resumed from where it was, not from scratch
    assert int(resumed) >= int(first.metadata.resource_version)
    assert store.list_calls == 1


@asynccontextmanager
async def memory_controller(
    terminals: RecordingTerminals, data_dir: Path, git_base: Path
) -> AsyncIterator[MemoryStore]:
    """A memory store with a running controller over it; both stopped on exit."""
    store = MemoryStore()
    await store.start()
    ctl = EmbeddedController(
        store, terminals, data_dir=data_dir, git_base_url=git_base.as_uri(), sweep_interval=0.2
    )
    await ctl.start()
    try:
        yield store
    finally:
        await ctl.stop()
        await store.close()


async def test_a_racing_writer_only_causes_retries(
    terminals: RecordingTerminals, data_dir: Path, git_base: Path
) -> None:
    key = ("acme", "box")
    async with memory_controller(terminals, data_dir, git_base) as store:
        await store.create(new_sandbox("box", repos=("acme/app",)))
        for i in range(30):  # keep changing labels while the controller works
            current = await store.get(*key)
            labeled = current.with_meta(labels={"round": str(i)})
            await store.update(labeled)
            await asyncio.sleep(0.005)
        ready = await wait_for(store, key, phase("Ready"))
    assert ready.metadata.labels == {"round": "29"}  # the controller never clobbered them


async def test_stopping_the_controller_kills_a_running_clone(
    terminals: RecordingTerminals, data_dir: Path
) -> None:
    store = MemoryStore()
    await store.start()
    key = ("acme", "box")
    async with StallingGitServer(stall=True) as remote:
        ctl = EmbeddedController(store, terminals, data_dir=data_dir, git_base_url=remote.url)
        await ctl.start()
        try:
            await store.create(new_sandbox("box", repos=("acme/app",)))
            while remote.requests == 0:
                await asyncio.sleep(0.02)
            partials = list(workspace_path(data_dir, *key).glob(".clone-app-*"))
            assert len(partials) == 1
            assert processes_mentioning(str(partials[0]))  # git is running
        finally:
            await ctl.stop()
    assert processes_mentioning(str(partials[0])) == []
    assert not partials[0].exists()
    stuck = await store.get(*key)
    assert stuck.status.phase == "Provisioning"  # a later start picks it up again
    await store.close()


async def test_a_failed_sandbox_is_retried_after_its_spec_is_fixed(
    terminals: RecordingTerminals, data_dir: Path, git_base: Path
) -> None:
    key = ("acme", "box")
    async with memory_controller(terminals, data_dir, git_base) as store:
        await store.create(new_sandbox("box", repos=("acme/nope",)))
        failed = await wait_for(store, key, phase("Failed"))
        fixed = await store.update(replace(failed, spec=replace(failed.spec, repos=("acme/app",))))
        assert fixed is not None
        ready = await wait_for(store, key, phase("Ready"))
    assert ready.status.observed_generation == fixed.metadata.generation
    assert (workspace_path(data_dir, *key) / "app" / "README.md").is_file()
