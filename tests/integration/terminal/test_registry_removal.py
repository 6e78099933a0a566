"""Issue 11: removing a sandbox's terminals leaves none behind. A terminal started while
the others are being stopped (an attach that got past its checks just before the
deletion) is stopped too, never dropped from the registry while its process runs on in
a workspace being removed. Real processes in real PTYs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.terminal.registry import SandboxContext, SessionRequest, TerminalRegistry

# ignores the hang-up and the polite signal: its stop takes the registry's whole grace
STUBBORN = ("/bin/sh", "-c", "trap '' HUP TERM; while :; do sleep 1; done")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_terminal_started_during_the_removal_is_stopped_too(tmp_path: Path) -> None:
    registry = TerminalRegistry(catalogue=load_catalogue(None), term_grace=0.5)
    registry.add_sandbox(SandboxContext("acme/box", namespace="acme", workdir=str(tmp_path)))
    first = registry.create("acme/box", SessionRequest(command=STUBBORN))
    removal = asyncio.create_task(registry.remove_sandbox("acme/box"))
    await asyncio.sleep(0)  # the removal is under way: it waits out the first's grace
    assert not removal.done() and not first.exited
    late = registry.create("acme/box", SessionRequest(command=("sleep", "60")))
    await removal
    try:
        assert late.exited, "the terminal started during the removal is still running"
        assert not _alive(late.pid)
        assert registry.live_count("acme/box") == 0
    finally:
        if _alive(late.pid):
            os.killpg(late.process.pgid, 9)
    await registry.close()
