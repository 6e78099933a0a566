"""Issue 11: a sandbox that keeps failing is retried on its back-off, not on every
sweep, and a filesystem error during a clone is a permanent failure."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from controller_support import ControllerFactory, RecordingTerminals, new_sandbox, wait_for

from openova_sandbox.domain.model import Sandbox


class BrokenTerminals(RecordingTerminals):
    """Observing one sandbox raises every time: its reconcile can never succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def agent_problem(self, sandbox: Sandbox) -> str | None:
        if sandbox.key == ("acme", "broken"):
            self.calls += 1
            raise RuntimeError("cannot observe")
        return super().agent_problem(sandbox)


@pytest.mark.parametrize("store", ["memory"], indirect=True)
async def test_the_sweep_honours_the_backoff_of_a_failing_sandbox(
    store: Any, controller: ControllerFactory
) -> None:
    terminals = BrokenTerminals()
    await store.create(new_sandbox("broken"))
    async with controller(terminals=terminals, sweep_interval=0.1):
        await asyncio.sleep(3.2)
    # back-off 0.5 s, 1 s, 2 s: about four passes; a sweep every 0.1 s made ~30
    assert 2 <= terminals.calls <= 6, terminals.calls


@pytest.mark.parametrize("store", ["memory"], indirect=True)
async def test_a_filesystem_error_in_a_clone_fails_the_sandbox_for_good(
    store: Any,
    controller: ControllerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a git that "succeeds" but leaves nothing: moving the clone into place is refused
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text(f"#!/bin/sh\necho run >> {tmp_path / 'git.log'}\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    await store.create(new_sandbox("box", repos=("acme/app",)))
    async with controller(sweep_interval=0.1):
        failed = await wait_for(
            store, ("acme", "box"), lambda sb: sb.status.phase == "Failed", timeout=8
        )
        await asyncio.sleep(1.0)
    ready = failed.status.condition("Ready")
    assert ready is not None and ready.reason == "CloneFailed", failed.status.to_dict()
    assert (tmp_path / "git.log").read_text().count("run") == 1
