"""Live output written straight from the PTY reader while a viewer's pump waits
(``Viewer.send_directly``, used by the lean WebSocket path), and output held only while
every viewer is backed up (session.py's flush path). Real PTYs, no HTTP."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.terminal.core import SNAPSHOT
from openova_sandbox.terminal.registry import SandboxContext, SessionRequest, TerminalRegistry
from openova_sandbox.terminal.session import Output, TerminalSession

pytestmark = pytest.mark.timeout(60)

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[TerminalRegistry]:
    terminals = TerminalRegistry(catalogue=load_catalogue(None), term_grace=1.0)
    terminals.add_sandbox(
        SandboxContext(sandbox_id="s", workdir=str(tmp_path), default_agent="sovereign-shell")
    )
    yield terminals
    await terminals.close()


async def _parked(session: TerminalSession, waiter: asyncio.Task[object]) -> None:
    for _ in range(10):  # let the pump reach its wait
        await asyncio.sleep(0)
    assert not waiter.done()


async def test_a_waiting_pump_gets_live_output_written_directly(
    registry: TerminalRegistry,
) -> None:
    session = registry.create("s", SessionRequest(command=SLEEPER))
    viewer = session.attach()
    written: list[tuple[bytes, int]] = []
    viewer.send_directly(lambda data, start: written.append((data, start)) is None)
    pump = asyncio.create_task(viewer.next())
    await _parked(session, pump)
    session.announce(b"one")
    session.announce(b"two")
    assert [data for data, _ in written] == [b"one", b"two"]
    assert written[0][1] == viewer.first.end  # live from where the first frame ended
    assert written[0][1] + 3 == written[1][1]  # contiguous offsets
    assert not pump.done()  # nothing was left for the pump
    pump.cancel()
    viewer.close()


async def test_output_a_socket_refused_is_queued_and_a_resync_still_comes(
    registry: TerminalRegistry,
) -> None:
    """Output the socket did not take is not counted as handed: when a snapshot
    supersedes it, the viewer's acknowledgements can still reach what it was handed."""
    session = registry.create("s", SessionRequest(command=SLEEPER))
    viewer = session.attach(window=100)
    assert not isinstance(await viewer.next(), Output)  # the viewers control
    viewer.send_directly(lambda data, start: False)  # a backed-up socket
    pump = asyncio.create_task(viewer.next())
    await _parked(session, pump)
    session.announce(b"a" * 60)  # refused, queued
    session.announce(b"b" * 60)  # past the window: the queue is superseded
    item = await asyncio.wait_for(pump, 5)
    assert isinstance(item, Output)
    assert item.kind == SNAPSHOT
    viewer.close()


async def test_output_held_for_a_backed_up_viewer_is_all_delivered_in_order(
    registry: TerminalRegistry,
) -> None:
    script = (
        "import sys, tty; tty.setraw(0); print('READY', flush=True); "
        "sys.stdin.buffer.raw.read(1); print('x' * 3000, flush=True)"
    )
    session = registry.create("s", SessionRequest(command=(sys.executable, "-c", script)))
    viewer = session.attach()
    seen = b""
    while b"READY" not in seen:
        item = await asyncio.wait_for(viewer.next_bytes(), 10)
        assert item is not None
        seen += item
    session.announce(b"queued")  # its pump is not waiting now: the viewer is backed up
    session.write(b"g")
    got = b""
    while b"x" * 3000 not in got:
        await asyncio.sleep(0.01)
        item = await asyncio.wait_for(viewer.next(), 5)
        assert isinstance(item, Output)
        got += item.data
    assert got.startswith(b"queued")
    assert got.count(b"x") == 3000
    viewer.close()
