"""The lean WebSocket path (api/terminal_edge/lean_ws.py) under a real uvicorn: frames
of an accepted channel bypass ASGI, and the wire is still RFC 6455 (checked with the
``websockets`` client and with hand-written frames for what a client library never sends)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from openova_sandbox.api.terminal_edge.channel import WebSocketChannel
from openova_sandbox.api.terminal_edge.lean_ws import LeanWebSocketProtocol
from openova_sandbox.api.terminal_edge.ws_frames import frame_header

pytestmark = pytest.mark.asyncio


async def _echo(websocket: WebSocket) -> None:
    """Echoes frames as they came (text as text); ``lean?`` answers whether frames
    bypass ASGI; ``close`` closes 4000; ``sink`` switches to the synchronous sink."""
    channel = await WebSocketChannel.accept(websocket)
    sunk: list[bytes | str] = []

    def sink(frame: bytes | str) -> bool:
        if isinstance(frame, str):
            return False  # text frames are left to receive
        sunk.append(frame)
        return True

    while True:
        frame = await channel.receive()
        if frame is None:
            return
        if frame == "lean?":
            await channel.send_text(str(channel.lean))
        elif frame == "close":
            await channel.close(4000, "bye")
            return
        elif frame == "sink":
            channel.set_sink(sink)
        elif frame == "sunk":
            await channel.send_text(repr(sunk))
        elif isinstance(frame, bytes):
            await channel.send_bytes(frame)
        else:
            await channel.send_text(frame)


@asynccontextmanager
async def serving(**options: object) -> AsyncIterator[int]:
    app = Starlette(routes=[WebSocketRoute("/ws", _echo)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        ws=LeanWebSocketProtocol,
        ws_per_message_deflate=False,
        **options,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def test_frames_bypass_asgi_and_round_trip() -> None:
    async with serving() as port, connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send("lean?")
        assert await ws.recv() == "True"
        for size in (0, 1, 125, 126, 65535, 65536, 300_000):
            payload = os.urandom(size)
            await ws.send(payload)
            assert await ws.recv() == payload
        await ws.send("héllo ✓")
        assert await ws.recv() == "héllo ✓"
        await ws.send([b"frag", b"mented", b"!"])  # a fragmented message
        assert await ws.recv() == b"fragmented!"
        await ws.send(["te", "xt"])
        assert await ws.recv() == "text"
        pong = await ws.ping(b"p1")
        await asyncio.wait_for(pong, 5)


async def test_the_sink_takes_frames_in_order() -> None:
    async with serving() as port, connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send("sink")
        await ws.send("lean?")  # a text frame: left to receive
        assert await ws.recv() == "True"
        for i in range(50):
            await ws.send(bytes([i]))
        await ws.send("sunk")
        assert await ws.recv() == repr([bytes([i]) for i in range(50)])


async def test_server_close_and_client_close() -> None:
    async with serving() as port:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("close")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "bye")
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("lean?")
            assert await ws.recv() == "True"
            await ws.close(1000, "done")
            assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000


async def test_keepalive_pongs_keep_the_connection() -> None:
    async with (
        serving(ws_ping_interval=0.05, ws_ping_timeout=1.0) as port,
        connect(f"ws://127.0.0.1:{port}/ws") as ws,
    ):
        await asyncio.sleep(0.3)  # several server pings answered by the client
        await ws.send(b"still here")
        assert await ws.recv() == b"still here"


def _handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def _masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    header = bytearray(frame_header(opcode, len(payload)))
    header[0] = (header[0] & 0x7F) | (0x80 if fin else 0)
    header[1] |= 0x80
    return bytes(header) + mask + body


def _close_code(sock: socket.socket) -> int:
    sock.settimeout(5)
    data = b""
    while len(data) < 4:
        chunk = sock.recv(64)
        if not chunk:
            break
        data += chunk
    assert data[0] == 0x88, data
    return int(struct.unpack("!H", data[2:4])[0])


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (frame_header(0x2, 3) + b"abc", 1002),  # not masked
        (_masked(0x1, b"\xff\xfe"), 1007),  # invalid UTF-8
        (_masked(0x0, b"orphan"), 1002),  # a continuation with nothing to continue
        (_masked(0x9, b"x", fin=False), 1002),  # a fragmented control frame
        (_masked(0x3, b"x"), 1002),  # a reserved opcode
    ],
)
async def test_protocol_violations_close_with_the_rfc_code(frame: bytes, code: int) -> None:
    async with serving() as port:
        sock = await asyncio.to_thread(_handshake, port)
        try:
            sock.sendall(frame)
            assert await asyncio.to_thread(_close_code, sock) == code
        finally:
            sock.close()


async def test_too_big_closes_1009_and_split_frames_are_joined() -> None:
    async with serving(ws_max_size=1000) as port:
        sock = await asyncio.to_thread(_handshake, port)
        try:
            frame = _masked(0x2, b"split across segments")
            for i in range(len(frame)):  # one byte per segment
                sock.sendall(frame[i : i + 1])
                await asyncio.sleep(0)
            sock.settimeout(5)
            echoed = await asyncio.to_thread(sock.recv, 64)
            assert echoed == frame_header(0x2, 21) + b"split across segments"
            sock.sendall(_masked(0x2, b"x" * 1001))
            assert await asyncio.to_thread(_close_code, sock) == 1009
        finally:
            sock.close()
