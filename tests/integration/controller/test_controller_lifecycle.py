"""The embedded controller end to end over the real MemoryStore and a SQLite SqlStore.

Every test runs against both stores (the ``store`` fixture is parametrized), with real
``git`` against bare repos in tmp_path and real sockets on 127.0.0.1 for remotes that
stall or answer 404.
"""

from __future__ import annotations

import asyncio
import stat
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from controller_support import (
    ControllerFactory,
    RecordingTerminals,
    StallingGitServer,
    new_sandbox,
    phase,
    wait_for,
    wait_gone,
)

from openova_sandbox.controller.local import workspace_path
from openova_sandbox.domain.model import CONDITION_TYPES, FINALIZER

ORDER = [*CONDITION_TYPES, "Ready"]


async def test_a_new_sandbox_becomes_ready_with_every_condition_in_order(
    store: Any, controller: ControllerFactory, data_dir: Path
) -> None:
    async with controller():
        started = time.monotonic()
        await store.create(new_sandbox("box"))
        ready = await wait_for(store, ("acme", "box"), phase("Ready"))
        elapsed = time.monotonic() - started
    assert elapsed < 10, f"took {elapsed:.2f}s"
    assert [c.type for c in ready.status.conditions] == ORDER
    assert all(c.status == "True" for c in ready.status.conditions)
    assert ready.status.observed_generation == ready.metadata.generation
    assert ready.metadata.finalizers == (FINALIZER,)
    ws = workspace_path(data_dir, "acme", "box")
    assert ws.is_dir()
    assert stat.S_IMODE(ws.stat().st_mode) == 0o700


async def test_a_new_sandbox_with_nothing_to_clone_takes_two_writes_to_ready(
    store: Any, controller: ControllerFactory, data_dir: Path
) -> None:
    """The finalizer (the folders are made meanwhile), then one status write that is
    already Ready: no Pending or Provisioning write on the way; and the workspace and
    HOME exist by the time anyone can see Ready."""
    async with controller():
        created = await store.create(new_sandbox("box"))
        watch = store.watch(created.metadata.resource_version)
        seen: list[tuple[str, str, bool, bool]] = []
        try:
            async with asyncio.timeout(10):
                async for event in watch:
                    sb = event.object
                    ws = workspace_path(data_dir, "acme", "box")
                    home = data_dir / "homes" / "acme" / "box"
                    seen.append((event.type, sb.status.phase, ws.is_dir(), home.is_dir()))
                    if sb.status.phase == "Ready":
                        break
        finally:
            await watch.aclose()
        assert [(t, p) for t, p, _, _ in seen] == [("MODIFIED", ""), ("MODIFIED", "Ready")]
        assert seen[-1][2:] == (True, True)
        await asyncio.sleep(0.3)  # its own writes' events bring no further pass
        assert (await store.get("acme", "box")).metadata.resource_version == str(
            int(created.metadata.resource_version) + 2
        )


async def test_a_file_repo_is_cloned_into_the_workspace(
    store: Any, controller: ControllerFactory, data_dir: Path
) -> None:
    async with controller():
        await store.create(new_sandbox("box", repos=("acme/app",)))
        ready = await wait_for(store, ("acme", "box"), phase("Ready"))
    pvcs = ready.status.condition("PVCsReady")
    assert pvcs is not None and pvcs.reason == "ReposCloned"
    clone = workspace_path(data_dir, "acme", "box") / "app"
    assert (clone / "README.md").read_text() == "hello from acme/app\n"
    assert (clone / ".git").is_dir()
    assert not list(clone.parent.glob(".clone-*"))


async def test_a_cross_org_repo_fails_without_touching_the_disk(
    store: Any, controller: ControllerFactory, data_dir: Path
) -> None:
    async with controller():
        await store.create(new_sandbox("box", repos=("other/app",)))
        failed = await wait_for(store, ("acme", "box"), phase("Failed"))
    ready = failed.status.condition("Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "CrossOrgRepo")
    assert "'other/app'" in ready.message
    assert not workspace_path(data_dir, "acme", "box").exists()
    assert FINALIZER not in failed.metadata.finalizers


async def test_a_missing_repo_fails_with_gits_own_message(
    store: Any, controller: ControllerFactory, data_dir: Path
) -> None:
    async with controller():
        await store.create(new_sandbox("box", repos=("acme/missing",)))
        failed = await wait_for(store, ("acme", "box"), phase("Failed"))
    pvcs = failed.status.condition("PVCsReady")
    assert pvcs is not None and (pvcs.status, pvcs.reason) == ("False", "CloneFailed")
    assert "does not appear to be a git repository" in pvcs.message  # git's words
    assert "acme/missing" in pvcs.message
    ws = workspace_path(data_dir, "acme", "box")
    assert ws.is_dir() and list(ws.iterdir()) == []  # the partial clone was removed


async def test_a_clone_error_never_shows_the_credentials_of_the_git_url(
    store: Any, controller: ControllerFactory
) -> None:
    async with StallingGitServer(stall=False) as remote:
        base = remote.url.replace("http://", "http://bot:s3cr3t-t0ken@")
        async with controller(git_base_url=base + "/"):
            await store.create(new_sandbox("box", repos=("acme/app",)))
            failed = await wait_for(store, ("acme", "box"), phase("Failed"))
    assert remote.requests >= 1  # git really went to the server
    pvcs = failed.status.condition("PVCsReady")
    assert pvcs is not None and pvcs.reason == "CloneFailed"
    assert "fatal:" in pvcs.message
    assert "s3cr3t-t0ken" not in str(failed.to_dict())


async def test_a_clone_that_hangs_times_out(store: Any, controller: ControllerFactory) -> None:
    async with (
        StallingGitServer(stall=True) as remote,
        controller(git_base_url=remote.url, clone_timeout=1.0),
    ):
        await store.create(new_sandbox("box", repos=("acme/app",)))
        failed = await wait_for(store, ("acme", "box"), phase("Failed"))
    pvcs = failed.status.condition("PVCsReady")
    assert pvcs is not None and "timed out after 1s" in pvcs.message


async def test_deletion_stops_terminals_removes_the_workspace_and_the_object(
    store: Any, controller: ControllerFactory, terminals: RecordingTerminals, data_dir: Path
) -> None:
    key = ("acme", "box")
    async with controller():
        await store.create(new_sandbox("box", repos=("acme/app",)))
        await wait_for(store, key, phase("Ready"))
        terminals.live[key] = 1
        await wait_for(store, key, lambda sb: sb.status.sessions == 1)
        marked = await store.delete(*key)
        assert marked is not None and marked.deleting  # held by the finalizer
        await wait_gone(store, key)
    assert key in terminals.stopped
    assert terminals.live == {}
    assert not workspace_path(data_dir, *key).exists()


async def test_a_restarted_controller_does_no_work_for_ready_sandboxes(
    store: Any,
    controller: ControllerFactory,
    terminals: RecordingTerminals,
    data_dir: Path,
) -> None:
    key = ("acme", "box")
    async with controller() as first:
        await store.create(new_sandbox("box", repos=("acme/app",)))
        before = await wait_for(store, key, phase("Ready"))
        await first.wait_idle()
        before = await store.get(*key)
    git_dir = workspace_path(data_dir, *key) / "app" / ".git"
    inode = git_dir.stat().st_ino
    async with controller() as second:
        await second.wait_idle()
        await asyncio.sleep(0.5)  # a couple of sweeps
        await second.wait_idle()
        after = await store.get(*key)
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.status.phase == "Ready"
    assert git_dir.stat().st_ino == inode  # not cloned again
    assert terminals.stopped == []


async def test_a_slow_clone_does_not_hold_up_other_sandboxes_and_deletion_cancels_it(
    store: Any,
    controller: ControllerFactory,
    data_dir: Path,
    git_base: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with StallingGitServer(stall=True) as remote:
        # Only org "slowco" goes to the stalling server; acme stays on the file:// base.
        monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
        monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.{remote.url}/slowco/.insteadOf")
        monkeypatch.setenv("GIT_CONFIG_VALUE_0", f"{git_base.as_uri()}/slowco/")
        async with controller():
            slow = ("slowco", "stuck")
            await store.create(
                new_sandbox("stuck", org="slowco", repos=("slowco/big",), email="a@slowco.io")
            )
            await wait_for(
                store,
                slow,
                lambda sb: (
                    (c := sb.status.condition("PVCsReady")) is not None and c.reason == "Cloning"
                ),
            )
            while remote.requests == 0:  # git is now waiting on the server
                await asyncio.sleep(0.02)
            await store.create(new_sandbox("quick", repos=("acme/app",)))
            await wait_for(store, ("acme", "quick"), phase("Ready"))
            stuck = await store.get(*slow)
            assert stuck.status.phase == "Provisioning"
            ws = workspace_path(data_dir, *slow)
            assert list(ws.glob(".clone-big-*"))  # the clone is under way
            started = time.monotonic()
            await store.delete(*slow)
            await wait_gone(store, slow)
            assert time.monotonic() - started < 10  # not the 300 s clone timeout
            assert not ws.exists()


async def test_sessions_and_last_activity_follow_the_terminals(
    store: Any, controller: ControllerFactory, terminals: RecordingTerminals
) -> None:
    key = ("acme", "box")
    async with controller():
        await store.create(new_sandbox("box"))
        await wait_for(store, key, phase("Ready"))
        seen = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        terminals.live[key] = 2
        terminals.activity[key] = seen
        sb = await wait_for(store, key, lambda sb: sb.status.sessions == 2)
        sb = await wait_for(store, key, lambda sb: sb.status.last_activity_at == seen)
        # Activity a second later is not worth a write; a minute later is.
        terminals.activity[key] = seen + timedelta(seconds=1)
        terminals.live[key] = 0
        sb = await wait_for(store, key, lambda sb: sb.status.sessions == 0)
        assert sb.status.last_activity_at == seen
        terminals.activity[key] = seen + timedelta(minutes=1)
        await wait_for(
            store, key, lambda sb: sb.status.last_activity_at == seen + timedelta(minutes=1)
        )
        assert sb.status.phase == "Ready"


async def test_a_sandbox_waits_for_the_terminal_server(
    store: Any, controller: ControllerFactory, terminals: RecordingTerminals
) -> None:
    terminals.up = False
    key = ("acme", "box")
    async with controller():
        await store.create(new_sandbox("box"))
        waiting = await wait_for(
            store,
            key,
            lambda sb: (
                sb.status.phase == "Provisioning"
                and (c := sb.status.condition("NamespaceReady")) is not None
                and c.status == "True"
            ),
        )
        pty = waiting.status.condition("PtyReady")
        assert pty is not None and pty.status == "Unknown"
        terminals.up = True
        await wait_for(store, key, phase("Ready"))


async def test_a_spec_change_clones_the_new_repo(
    store: Any, controller: ControllerFactory, data_dir: Path, git_base: Path
) -> None:
    key = ("acme", "box")
    async with controller():
        created = await store.create(new_sandbox("box"))
        ready = await wait_for(store, key, phase("Ready"))
        changed = await store.update(replace(ready, spec=replace(ready.spec, repos=("acme/app",))))
        assert (
            changed is not None and changed.metadata.generation == created.metadata.generation + 1
        )
        done = await wait_for(
            store,
            key,
            lambda sb: (
                sb.status.phase == "Ready"
                and sb.status.observed_generation == changed.metadata.generation
            ),
        )
    assert (workspace_path(data_dir, *key) / "app" / "README.md").exists()
    assert done.status.condition("PVCsReady") is not None
