"""The registry and sessions driven directly (real PTYs, no HTTP)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.errors import AlreadyExists, Conflict, Invalid, NotFound
from openova_sandbox.terminal.registry import SandboxContext, SessionRequest, TerminalRegistry
from openova_sandbox.terminal.session import SessionExited, Viewer

pytestmark = pytest.mark.timeout(60)

RAW_READER = (
    "import sys, tty\n"
    "tty.setraw(0)\n"
    "print('READY', flush=True)\n"
    "n = 0\n"
    "while n < 300000:\n"
    "    n += len(sys.stdin.buffer.raw.read(65536))\n"
    "print('GOT', n, flush=True)\n"
    "sys.stdin.buffer.raw.read(1)\n"
)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[TerminalRegistry]:
    terminals = TerminalRegistry(catalogue=load_catalogue(None), term_grace=1.0)
    terminals.add_sandbox(
        SandboxContext(sandbox_id="s", workdir=str(tmp_path), default_agent="sovereign-shell")
    )
    yield terminals
    await terminals.close()


async def _until(viewer: Viewer, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        frame = await asyncio.wait_for(viewer.next_bytes(), 15)
        assert frame is not None, seen
        seen += frame
    return seen


async def test_large_input_is_buffered_until_the_process_reads_it(
    registry: TerminalRegistry,
) -> None:
    session = registry.create("s", SessionRequest(command=(sys.executable, "-c", RAW_READER)))
    viewer = session.attach()
    await _until(viewer, b"READY")
    session.write(b"a" * 300_000)  # far more than the PTY's input queue
    await _until(viewer, b"GOT 300000")
    assert registry.counters.input_bytes == 300_000


async def test_announce_goes_into_the_stream_and_the_replay(registry: TerminalRegistry) -> None:
    session = registry.create("s", SessionRequest(command=("cat",)))
    live = session.attach()
    session.announce(b"[sandbox] restarted\r\n")
    assert b"restarted" in await _until(live, b"restarted")
    assert b"restarted" in session.attach().replay


async def test_ids_duplicates_forget_and_unknown(registry: TerminalRegistry) -> None:
    with pytest.raises(Invalid) as bad:
        registry.create("s", SessionRequest(command=("cat",)), session_id="../etc")
    assert bad.value.code == "invalid-id"
    first = registry.open("s", "main")
    assert registry.open("s", "main") is first
    with pytest.raises(AlreadyExists):
        registry.create("s", session_id="main")
    with pytest.raises(Conflict):
        registry.forget("s", "main")
    first.signal(9)
    await asyncio.wait_for(first.wait_exited(), 15)
    with pytest.raises(SessionExited):
        first.attach()
    registry.forget("s", "main")
    again = registry.open("s", "main")
    assert again is not first
    assert not again.exited
    with pytest.raises(NotFound):
        registry.get("s", "nope")
    with pytest.raises(NotFound):
        registry.list("other-sandbox")
    assert registry.live_count("other-sandbox") == 0


async def test_stop_all_ends_every_terminal_of_one_sandbox_only(
    registry: TerminalRegistry, tmp_path: Path
) -> None:
    registry.add_sandbox(SandboxContext(sandbox_id="t", workdir=str(tmp_path)))
    mine = [registry.create("s", SessionRequest(command=("cat",))) for _ in range(3)]
    other = registry.create("t", SessionRequest(command=("cat",)))
    viewer = mine[0].attach()
    await registry.stop_all("s")
    assert all(s.exited for s in mine)
    assert registry.list("s") == []
    assert await viewer.next() is None
    assert viewer.close_code == 1001  # sent away, not "exited"
    assert not other.exited
    assert registry.live_count("t") == 1
    before = registry.last_activity_at("t")
    other.write(b"x")
    assert registry.last_activity_at("t") >= before


NUMBERED = (
    "import os, sys, tty\n"
    "tty.setraw(0)\n"
    "tag = sys.argv[1].encode()\n"
    "os.write(1, b'READY')\n"
    "os.read(0, 1)\n"
    "for i in range(4000):\n"
    "    os.write(1, b'%s%05d\\n' % (tag, i))\n"
    "os.write(1, b'DONE')\n"
    "os.read(0, 1)\n"
)


async def test_sessions_reading_side_by_side_keep_their_own_bytes(
    registry: TerminalRegistry,
) -> None:
    """Sessions of one loop share its read buffer; each session's output, read in many
    callbacks and held while its viewer is backed up, arrives whole and in order."""
    tags = (b"A", b"B", b"C")
    sessions = [
        registry.create("s", SessionRequest(command=(sys.executable, "-c", NUMBERED, t.decode())))
        for t in tags
    ]
    viewers = [s.attach() for s in sessions]
    for viewer in viewers:
        await _until(viewer, b"READY")
    for session in sessions:
        session.write(b"g")  # all three write at once
    for tag, viewer in zip(tags, viewers, strict=True):
        seen = await _until(viewer, b"DONE")  # (the others' viewers are backed up meanwhile)
        lines = seen[: seen.index(b"DONE")].split(b"\n")  # (READY came before the go)
        assert lines[:-1] == [b"%s%05d" % (tag, i) for i in range(4000)]
