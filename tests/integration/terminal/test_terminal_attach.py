"""Raw attach over a real pty-server (its own HTTP server) and real PTYs.

The replay is the server's screen (a snapshot that rebuilds it on a reset terminal),
not the raw bytes: a viewer that attaches later sees the same *screen* as one that
watched from the start, which is what these tests compare (rendered with pyte)."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pyte
import pytest
from pty_harness import ADMIN, OWNER, STRANGER, read_until
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(90)


TAIL = 64 * 1024  # more than a screen of the bulk test's lines


def _screen(data: bytes) -> list[str]:
    screen = pyte.Screen(80, 24)
    pyte.ByteStream(screen).feed(data)
    return list(screen.display)


async def _closed_code(ws: Any, *, timeout: float = 15.0) -> int | None:
    async def drain() -> None:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            return

    await asyncio.wait_for(drain(), timeout)
    return ws.close_code  # type: ignore[no-any-return]


async def test_typed_input_reaches_the_process_and_output_comes_back(start_server: Any) -> None:
    server = await start_server()
    ws = await server.attach("box")  # lazy spawn of the default agent under the id given
    await read_until(ws, b"agent ready")
    await ws.send("hello there\r")
    out = await read_until(ws, b"agent: HELLO THERE")
    assert b"hello there" in out  # the terminal echoed the keystrokes


async def test_binary_frames_are_written_verbatim(start_server: Any) -> None:
    server = await start_server()
    sid = await server.create({"command": ["cat"]})
    ws = await server.attach(sid)
    await ws.send(b"\xc3\xa9t\xc3\xa9\r")
    out = await read_until(ws, "été\r\n".encode() * 2)
    assert out.count("été".encode()) == 2


async def test_second_viewer_sees_the_same_stream(start_server: Any) -> None:
    server = await start_server()
    first = await server.attach("box")
    ready = await read_until(first, b"agent ready")
    second = await server.attach("box")
    await first.send("lines 300\r")
    a = ready + await read_until(first, b"END")
    b = await read_until(second, b"END")
    assert b.startswith(b"\x1bc")  # the replay: a snapshot, from a full reset
    assert _screen(a) == _screen(b)  # the same screen, whenever the viewer came
    assert b"L000299" in b


async def test_reconnect_gets_replay_then_live_with_nothing_lost_or_doubled(
    start_server: Any,
) -> None:
    server = await start_server()
    ws = await server.attach("box")
    await ws.send("lines 50\r")
    await read_until(ws, b"END")
    await ws.close()
    # Output produced while nobody watches goes to the ring.
    keeper = server.registry.get("box", "box")
    keeper.write(b"lines 120\r")
    # wait for the whole answer, END included: the replay must be all there is
    async with asyncio.timeout(20):
        while b"L000119\r\nEND\r\n" not in keeper.core.ring.snapshot()[0]:
            await asyncio.sleep(0.02)
    again = await server.attach("box")
    replay = await again.recv()
    assert isinstance(replay, bytes)
    # the replay is ONE frame: the screen as of the ring's end, from a full reset
    assert replay.startswith(b"\x1bc")
    assert _screen(replay) == _screen(keeper.core.ring.snapshot()[0])
    await again.send("after\r")
    rest = await read_until(again, b"agent: AFTER\r\n")
    assert rest.count(b"agent: AFTER") == 1  # live output follows, nothing doubled
    assert b"L000119" not in rest  # what the replay covered is not sent again
    assert _screen(replay + rest) == _screen(keeper.core.ring.snapshot()[0])


async def test_a_viewer_that_stops_reading_is_resynced_and_never_delays_others(
    start_server: Any,
) -> None:
    server = await start_server(viewer_queue_bytes=256 * 1024, ring_bytes=512 * 1024)
    # A small receive window set before connecting, so the kernel cannot absorb the lag.
    slow_sock = socket.socket()
    slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_sock.connect(("127.0.0.1", server.port))
    # No compression: 24 MB of one letter would otherwise fit in the socket buffers.
    slow = await server.attach(
        "box", sock=slow_sock, max_queue=1, compression=None, ping_interval=None
    )
    fast = await server.attach("box")
    await read_until(fast, b"agent ready")
    await fast.send("bulk 24000000\r")
    got = await read_until(fast, b"BULKEND", timeout=60)
    # (On a very loaded machine the fast reader may itself be resynced once; what matters
    # is that it reached the end while the other one read nothing.)
    session = server.registry.get("box", "box")
    ring = session.core.ring.snapshot()[0]
    assert ring.endswith(b"BULKEND\r\n")
    assert _screen(got[-TAIL:]) == _screen(ring[-TAIL:])  # (pyte is slow: the tails)
    assert server.registry.counters.viewer_resyncs >= 1
    # The laggard now reads: it gets a resync snapshot of the screen as it is now.
    tail = await read_until(slow, b"BULKEND", timeout=30)
    assert b"\x1bc" in tail  # a snapshot (from a full reset), not the ring's raw tail
    assert _screen(tail[tail.rindex(b"\x1bc") :]) == _screen(ring[-TAIL:])
    metrics = (await server.http.get("/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith("pty_server_viewer_resyncs_total"))
    assert float(line.split()[-1]) >= 1


async def test_session_end_closes_1000_and_attach_after_end_closes_1001(
    start_server: Any,
) -> None:
    server = await start_server()
    # The process waits for a line, so it cannot end before this viewer is attached.
    script = "print('waiting', flush=True); input(); print('bye now')"
    sid = await server.create({"command": [sys.executable, "-c", script]})
    ws = await server.attach(sid)
    await read_until(ws, b"waiting")
    await ws.send("go\r")
    assert await _closed_code(ws) == 1000
    later = await server.attach(sid)
    assert await _closed_code(later) == 1001


async def test_lazy_spawn_with_agent_query_and_reuse_of_the_same_id(start_server: Any) -> None:
    server = await start_server()
    ws = await server.attach("extra-1", query={"agent": "sovereign-shell"})
    await ws.send("echo lazy-$((40+2))\r")
    await read_until(ws, b"lazy-42")
    info = (await server.http.get("/sessions/extra-1", headers=_auth(OWNER))).json()
    assert info["agent"] == "sovereign-shell"
    again = await server.attach("extra-1")
    assert b"lazy-42" in await read_until(again, b"lazy-42")
    listed = (await server.http.get("/sessions", headers=_auth(OWNER))).json()["sessions"]
    assert listed == ["extra-1"]


async def test_lazy_spawn_failure_writes_the_reason_into_the_terminal(start_server: Any) -> None:
    server = await start_server()
    ws = await server.attach("g", query={"agent": "ghost"})
    text = await read_until(ws, b"ghost-agent")
    assert b"not installed" in text
    assert await _closed_code(ws) == 1011


async def test_an_agent_outside_the_catalogue_writes_why_and_closes_1011(
    start_server: Any,
) -> None:
    server = await start_server()
    ws = await server.attach("h", query={"agent": "no-such-agent"})
    text = await read_until(ws, b"known agents")
    assert b"unknown agent 'no-such-agent'" in text
    assert await _closed_code(ws) == 1011


async def test_unknown_id_without_any_agent_is_404(start_server: Any) -> None:
    server = await start_server(default_agent="")
    with pytest.raises(InvalidStatus) as info:
        await server.attach("nobody")
    assert info.value.response.status_code == 404


@pytest.mark.parametrize("token", [None, "forged", STRANGER])
async def test_bad_or_missing_token_closes_1008(start_server: Any, token: str | None) -> None:
    server = await start_server()
    ws = await server.attach("box", token=token)
    assert await _closed_code(ws) == 1008
    assert server.registry.list("box") == []  # nothing was spawned for them


async def test_token_in_query_and_cookie_work_and_org_admin_may_attach(start_server: Any) -> None:
    server = await start_server()
    ws = await server.attach("box", token=None, query={"access_token": ADMIN})
    await read_until(ws, b"agent ready")
    ws2 = await server.attach(
        "box", token=None, additional_headers={"Cookie": f"catalyst_session={OWNER}"}
    )
    await read_until(ws2, b"agent ready")


async def test_origin_must_match_the_server_or_the_public_origin(start_server: Any) -> None:
    server = await start_server()
    bad = await server.attach("box", origin="http://evil.example")
    assert await _closed_code(bad) == 1008
    good = await server.attach("box", origin=f"http://127.0.0.1:{server.port}")
    await read_until(good, b"agent ready")
    public = await start_server(public_origin="https://sandbox.example.com/console")
    ok = await public.attach("box", origin="https://sandbox.example.com")
    await read_until(ok, b"agent ready")
    own = await public.attach("box", origin=f"http://127.0.0.1:{public.port}")
    assert await _closed_code(own) == 1008


async def test_websocket_sockets_have_tcp_nodelay(start_server: Any) -> None:
    import gc

    server = await start_server()
    ws = await server.attach("box")
    await read_until(ws, b"agent ready")
    client_port = ws.local_address[1]
    found = []
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, asyncio.BaseTransport):
                continue
            if obj.is_closing():  # a transport of an earlier test, maybe on a reused port
                continue
            sock = obj.get_extra_info("socket")
            peer = obj.get_extra_info("peername")
        except Exception:
            continue
        if sock is not None and sock.fileno() != -1 and peer and peer[1] == client_port:
            found.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    assert found, "server-side transport of the WebSocket not found"
    assert all(found)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
