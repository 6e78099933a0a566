"""The sandbox.v2 subprotocol over a real pty-server (its own HTTP server) and real PTYs.

Every binary frame carries its stream offset; a client that tracks them can tell a gap
or a duplicate, so these tests check offsets byte for byte: a live frame starts where
the previous one ended, a resume is exactly the ring's bytes from ``since``, anything
else is announced as a snapshot with its reason.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import struct
import sys
import termios
from dataclasses import dataclass, field
from typing import Any

import pytest
from pty_harness import PtyServer, read_until
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from openova_sandbox.domain.terminal_wire import SUBPROTOCOL_V2, unpack_frame

pytestmark = pytest.mark.timeout(90)
V2 = [SUBPROTOCOL_V2]


@dataclass
class Frame:
    start: int
    data: bytes
    announced: dict[str, Any] | None = None  # the snapshot/resume control before it

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass
class Client:
    """A v2 client that checks what a client must be able to rely on as it reads."""

    ws: ClientConnection
    hello: dict[str, Any] = field(default_factory=dict)
    controls: list[dict[str, Any]] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    offset: int | None = None  # where the next live frame must start
    _announced: dict[str, Any] | None = None

    async def recv(self, timeout: float = 15.0) -> Frame | dict[str, Any]:
        message = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(message, str):
            body = json.loads(message)
            assert isinstance(body, dict), message
            if body["type"] in ("snapshot", "resume"):
                assert self._announced is None, "two announcements without a frame"
                self._announced = body
            else:
                self.controls.append(body)
            return body
        start, data = unpack_frame(message)
        frame = Frame(start, data, self._announced)
        announced, self._announced = self._announced, None
        if announced is None:
            assert self.offset is not None, "a live frame before the first snapshot"
            assert start == self.offset, f"live frame at {start}, expected {self.offset}"
        elif announced["type"] == "snapshot":
            assert start == announced["seq"]
        else:
            assert start == announced["seq"]
        self.offset = frame.end if announced is None or announced["type"] == "resume" else start
        self.frames.append(frame)
        return frame

    async def frame(self) -> Frame:
        while True:
            got = await self.recv()
            if isinstance(got, Frame):
                return got

    async def control(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        async def loop() -> dict[str, Any]:
            while True:
                got = await self.recv()
                if isinstance(got, dict) and got["type"] == kind:
                    return got

        return await asyncio.wait_for(loop(), timeout)

    async def until(self, marker: bytes, *, timeout: float = 20.0) -> bytes:
        """Live bytes until ``marker`` (checking offsets all the way)."""
        seen = bytearray()

        async def loop() -> None:
            while marker not in seen:
                frame = await self.frame()
                assert frame.announced is None, f"unexpected {frame.announced}"
                seen.extend(frame.data)

        await asyncio.wait_for(loop(), timeout)
        return bytes(seen)

    async def send(self, body: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(body))


async def open_v2(server: PtyServer, session: str = "box", **query: str) -> Client:
    ws = await server.attach(session, query=query or None, subprotocols=V2)
    assert ws.subprotocol == SUBPROTOCOL_V2
    client = Client(ws)
    hello = await client.recv()
    assert isinstance(hello, dict) and hello["type"] == "hello"
    client.hello = hello
    client.controls.clear()
    return client


def pty_size(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


async def closed(ws: ClientConnection, timeout: float = 15.0) -> tuple[int | None, str]:
    async def drain() -> None:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            return

    await asyncio.wait_for(drain(), timeout)
    return ws.close_code, ws.close_reason or ""


async def test_hello_then_a_snapshot_then_live_frames_at_their_offsets(
    start_server: Any,
) -> None:
    server = await start_server()
    client = await open_v2(server)
    hello = client.hello
    assert hello["protocol"] == SUBPROTOCOL_V2
    assert hello["mode"] == "write"
    assert (hello["rows"], hello["cols"]) == (24, 80)
    assert hello["window"] == 1024 * 1024
    assert hello["activity"] in ("busy", "waiting", "idle")
    assert isinstance(hello["title"], str) and isinstance(hello["viewer"], str)
    first = await client.frame()
    assert first.announced == {"type": "snapshot", "seq": first.start, "reason": "attach"}
    assert first.data.startswith(b"\x1bc")  # rebuilds the screen from a full reset
    await client.ws.send(b"lines 300\r")  # binary frames are input
    seen = await client.until(b"END")
    assert b"L000299" in seen
    session = server.registry.get("box", "box")
    assert client.offset == session.core.end  # every byte up to now, none twice
    viewers = next(c for c in client.controls if c["type"] == "viewers")
    assert viewers["viewers"] == [
        {"id": hello["viewer"], "who": "Dev@Acme.com", "mode": "write", "you": True}
    ]


async def test_resume_with_since_sends_exactly_the_missed_bytes(start_server: Any) -> None:
    server = await start_server()
    client = await open_v2(server)
    await client.frame()
    await client.until(b"agent ready")
    since = client.offset
    assert since is not None
    await client.ws.close()
    keeper = server.registry.get("box", "box")
    keeper.write(b"lines 120\r")  # output while nobody watches
    async with asyncio.timeout(20):
        while b"L000119\r\nEND\r\n" not in keeper.core.ring.snapshot(since)[0]:
            await asyncio.sleep(0.02)
    missed, start, _ = keeper.core.ring.snapshot(since)
    assert start == since

    again = await open_v2(server, since=str(since))
    resumed = await again.frame()
    assert resumed.announced == {"type": "resume", "seq": since}
    assert resumed.start == since
    assert resumed.data == missed  # exactly [since, end): no gap, no duplicate
    await again.ws.send(b"after\r")
    rest = await again.until(b"agent: AFTER\r\n")
    assert b"L000119" not in rest
    assert again.offset == keeper.core.end


async def test_a_since_no_longer_held_gets_a_snapshot_marked_gap(start_server: Any) -> None:
    server = await start_server()
    sid = await server.create({"agent": "py-agent", "ringBytes": 8192})
    client = await open_v2(server, sid)
    await client.frame()
    await client.until(b"agent ready")
    since = client.offset
    await client.ws.close()
    session = server.registry.get("box", sid)
    session.write(b"lines 2000\r")  # ~18 KB: the 8 KiB ring wraps past ``since``
    async with asyncio.timeout(20):
        while b"END\r\n" not in session.core.ring.snapshot()[0]:
            await asyncio.sleep(0.02)
    assert session.core.ring.start > since
    late = await open_v2(server, sid, since=str(since))
    frame = await late.frame()
    assert frame.announced == {"type": "snapshot", "seq": session.core.end, "reason": "gap"}
    assert b"END" in frame.data and frame.data.startswith(b"\x1bc")
    # an offset from the future (another server's stream) is a gap too
    future = await open_v2(server, sid, since=str(session.core.end + 10))
    assert (await future.frame()).announced["reason"] == "gap"  # type: ignore[index]
    # and so is garbage: a fresh snapshot, never a refusal
    for odd_since in ("-5", "%C2%B2", "12x"):  # negative, a superscript two, not a number
        odd = await open_v2(server, sid, since=odd_since)
        assert (await odd.frame()).announced["reason"] == "attach"  # type: ignore[index]


async def test_a_viewer_past_its_window_gets_a_resync_snapshot_once_it_acks(
    start_server: Any,
) -> None:
    server = await start_server(viewer_window=64 * 1024)
    lagging = await open_v2(server)
    assert lagging.hello["window"] == 64 * 1024
    await lagging.frame()
    await lagging.until(b"agent ready")
    session = server.registry.get("box", "box")
    await lagging.ws.send(b"bulk 2000000\r")  # ~2 MB, and this viewer acks nothing
    async with asyncio.timeout(30):
        while not session.core.needs_resync(lagging.hello["viewer"]):
            await asyncio.sleep(0.01)
    # the program was never held up: it printed everything while the viewer lagged
    async with asyncio.timeout(30):
        while b"BULKEND" not in session.core.ring.snapshot()[0][-64:]:
            await asyncio.sleep(0.02)
    # now the client renders and acknowledges what it got (what it had already, then
    # each frame still in flight); once it has acked all it was sent, the server sends
    # the screen instead of the dropped queue
    await lagging.send({"type": "ack", "seq": lagging.offset})
    async with asyncio.timeout(30):
        while True:
            got = await lagging.recv()
            if isinstance(got, Frame):
                if got.announced is not None:
                    break
                await lagging.send({"type": "ack", "seq": got.end})
    assert got.announced == {"type": "snapshot", "seq": got.start, "reason": "resync"}
    assert got.start == session.core.end
    assert b"BULKEND" in got.data
    # and live frames continue from the snapshot's offset
    await lagging.ws.send(b"after\r")
    await lagging.until(b"agent: AFTER")


async def test_resize_ping_and_unknown_controls(start_server: Any) -> None:
    server = await start_server()
    client = await open_v2(server)
    await client.frame()
    await client.send({"type": "ping", "t": 12345})
    assert (await client.control("pong")) == {"type": "pong", "t": 12345}
    await client.send({"type": "no-such-control", "x": 1})  # ignored
    await client.send({"type": "resize", "rows": 0, "cols": 10})  # out of range: ignored
    await client.send({"type": "resize", "rows": 30, "cols": 100})
    size = await client.control("size")
    assert (size["rows"], size["cols"]) == (30, 100)
    session = server.registry.get("box", "box")
    assert (session.rows, session.cols) == (30, 100)
    assert pty_size(session.process.master_fd) == (30, 100)  # the kernel's, not a field
    await client.send({"type": "ping", "t": "after"})
    assert (await client.control("pong"))["t"] == "after"


@pytest.mark.parametrize("frame", ["not json", "[1, 2]", '"text"', "{bad"])
async def test_a_text_frame_that_is_not_a_json_object_closes_1003(
    start_server: Any, frame: str
) -> None:
    server = await start_server()
    client = await open_v2(server)
    await client.frame()
    await client.ws.send(frame)
    assert await closed(client.ws) == (1003, "bad control frame")


async def test_exit_control_then_close_1000_with_the_code(start_server: Any) -> None:
    server = await start_server()
    script = "import sys; print('waiting', flush=True); input(); sys.exit(3)"
    sid = await server.create({"command": [sys.executable, "-c", script]})
    client = await open_v2(server, sid)
    await client.frame()
    await client.until(b"waiting")
    await client.ws.send(b"go\r")
    assert await client.control("exit") == {"type": "exit", "code": 3}
    assert await closed(client.ws) == (1000, "agent exited with code 3")


async def test_without_the_subprotocol_the_raw_protocol_is_unchanged(start_server: Any) -> None:
    server = await start_server()
    raw = await server.attach("box")
    assert raw.subprotocol is None
    replay = await raw.recv()
    assert isinstance(replay, bytes) and replay.startswith(b"\x1bc")  # no offset header
    await raw.send("hi\r")
    await read_until(raw, b"agent: HI")
