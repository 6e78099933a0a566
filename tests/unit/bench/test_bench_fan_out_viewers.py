"""bench/terminal.py's fan-out viewers: each drains its WebSocket in a forked process of
its own and reports what it got (bytes, end time, marked snapshots, gaps) over a socket
pair. Driven here by the server side of a real socket pair writing RFC 6455 frames, and
real forks. The bench folder is not a package; its modules are loaded from their files."""

from __future__ import annotations

import os
import socket
import struct
import time

from support import bench_modules

terminal = bench_modules.terminal()


def frame(opcode: int, payload: bytes) -> bytes:
    """A server's (unmasked) frame."""
    size = len(payload)
    if size < 126:
        return bytes([0x80 | opcode, size]) + payload
    if size < 65536:
        return bytes([0x80 | opcode, 126]) + struct.pack("!H", size) + payload
    return bytes([0x80 | opcode, 127]) + struct.pack("!Q", size) + payload


def viewer_socket(*, v2: bool) -> tuple[object, socket.socket]:
    """A MinimalWebSocket past its upgrade, on one end of a socket pair; the other end."""
    client, server = socket.socketpair()
    ws = terminal.MinimalWebSocket.__new__(terminal.MinimalWebSocket)
    ws.sock, ws.buffer, ws.scratch, ws.v2 = client, b"", bytearray(1 << 20), v2
    return ws, server


def reported(pid: int, pair: socket.socket) -> tuple[bytes, int]:
    """What the viewer said after its R, and its exit status once this side closed."""
    said = terminal.collect({pid: pair}, time.monotonic() + 30, b"\n")
    pair.close()
    _, status = os.waitpid(pid, 0)
    return said[pid], os.waitstatus_to_exitcode(status)


def test_a_delivery_survives_its_trip_through_the_pipe() -> None:
    got = terminal.Delivery()
    got.received, got.ended, got.snapshots, got.gaps = 3 * 2**20, 12.5, 1, 2
    back = terminal.Delivery.decode(got.encode())
    assert vars(back) == {"received": 3 * 2**20, "ended": 12.5, "snapshots": 1, "gaps": 2}


def test_a_raw_viewer_process_reports_every_byte_and_when_the_marker_came() -> None:
    ws, server = viewer_socket(v2=False)
    pid, pair = terminal.viewer_process(ws, 0, b"BULKENDx", [server.fileno()])
    ws.sock.close()  # the viewer's now, as fan_out leaves it
    assert terminal.collect({pid: pair}, time.monotonic() + 30, b"R") == {pid: b"R"}
    t0 = time.perf_counter()
    body = b"y" * 200_000
    server.sendall(frame(0x9, b"hi") + frame(0x2, body) + frame(0x2, b"BULKENDx\r\n"))
    said, code = reported(pid, pair)
    got = terminal.Delivery.decode(said)
    assert code == 0
    assert got.received == len(body) + terminal.MARK
    assert t0 < got.ended < time.perf_counter()  # one clock across the processes
    pong = server.recv(64)  # it answered the ping, masked, as a client must
    assert pong[:2] == bytes([0x8A, 0x82])
    assert bytes(b ^ pong[2 + i % 4] for i, b in enumerate(pong[6:8])) == b"hi"
    server.close()


def test_a_v2_viewer_process_counts_gaps_and_a_marked_snapshot() -> None:
    ws, server = viewer_socket(v2=True)
    pid, pair = terminal.viewer_process(ws, 100, b"BULKENDz", [server.fileno()])
    ws.sock.close()
    assert terminal.collect({pid: pair}, time.monotonic() + 30, b"R") == {pid: b"R"}

    def output(start: int, data: bytes) -> bytes:
        return frame(0x2, struct.pack("!Q", start) + data)

    server.sendall(
        output(100, b"a" * 50)  # continues where the attach left it
        + output(160, b"b" * 40)  # 10 bytes lost: a gap
        + frame(0x1, b'{"type": "snapshot", "reason": "gap"}')
        + frame(0x2, struct.pack("!Q", 5000) + b"the screen")
        + output(5000, b"c" * 30 + b"BULKENDz\r\n")
    )
    said, code = reported(pid, pair)
    got = terminal.Delivery.decode(said)
    assert code == 0
    assert (got.received, got.gaps, got.snapshots) == (50 + 40 + 30 + terminal.MARK, 1, 1)
    server.close()


def test_a_viewer_whose_server_closes_reports_the_error_and_fails() -> None:
    ws, server = viewer_socket(v2=False)
    # it closes the server's end it inherited (as it does the other viewers' sockets),
    # or this close would not reach it
    pid, pair = terminal.viewer_process(ws, 0, b"BULKENDx", [server.fileno()])
    ws.sock.close()
    assert terminal.collect({pid: pair}, time.monotonic() + 30, b"R") == {pid: b"R"}
    server.sendall(frame(0x2, b"part of it"))
    server.close()
    said, code = reported(pid, pair)
    assert said.startswith(b"!ConnectionError") and b"closed" in said
    assert code == 1


def test_collect_leaves_out_a_viewer_silent_until_the_deadline_or_closed() -> None:
    pairs = [socket.socketpair() for _ in range(3)]
    pairs[0][1].sendall(b"R")
    pairs[2][1].close()
    mine = {pid: ends[0] for pid, ends in enumerate(pairs)}
    assert terminal.collect(mine, time.monotonic() + 0.2, b"R") == {0: b"R"}
    for a, b in pairs:
        a.close()
        b.close()
