"""The pty-server's own HTTP/1.1 and WebSocket server (api/terminal_edge/pty_server.py),
spoken to over raw sockets: malformed and oversized requests, routing answers, keep-alive
and pipelining, the WebSocket handshake's refusals, keepalive pings, and the token and
Origin rules at the handshake. Everything real: the server, the registry, PTYs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import websockets
from pty_harness import OWNER, STRANGER, read_until

from openova_sandbox.api.terminal_edge import pty_server
from openova_sandbox.api.terminal_edge.ws_frames import OP_CLOSE, OP_PING, OP_TEXT

KEY = base64.b64encode(b"k" * 16).decode()


async def exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(1 << 20), timeout) + await asyncio.wait_for(
            _rest(reader), timeout
        )
    finally:
        writer.close()


async def _rest(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while chunk := await reader.read(1 << 16):
        out += chunk
    return out


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def upgrade(path: str, *, key: str = KEY, version: str = "13", extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


# ------------------------------------------------------------------ HTTP
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ],
)
async def test_a_malformed_request_is_400_and_closed(start_server: Any, request_bytes) -> None:
    server = await start_server()
    response = await exchange(server.port, request_bytes)
    assert status_of(response) == 400
    assert b"connection: close" in response.lower()


async def test_headers_too_large_are_431_and_a_body_too_large_413(start_server: Any) -> None:
    server = await start_server()
    big = b"X-Big: " + b"a" * (pty_server.MAX_HEADER_BYTES + 10) + b"\r\n"
    response = await exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert status_of(response) == 431
    declared = (
        b"POST /sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer owner-token\r\n"
        + f"Content-Length: {pty_server.MAX_BODY_BYTES + 1}\r\n\r\n".encode()
    )
    assert status_of(await exchange(server.port, declared)) == 413
    size = pty_server.MAX_BODY_BYTES + 1
    chunked = (
        b"POST /sessions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{size:x}\r\n".encode()
        + b"a" * size
        + b"\r\n0\r\n\r\n"
    )
    assert status_of(await exchange(server.port, chunked)) == 413
    assert server.registry.list("box") == []  # nothing was created


async def test_routing_answers_404_405_307_and_head(start_server: Any) -> None:
    server = await start_server()
    missing = await server.http.get("/nowhere")
    assert (missing.status_code, missing.text) == (404, "Not Found")
    sent = parsedate_to_datetime(missing.headers["date"])  # every answer is dated
    assert abs((sent - datetime.now(UTC)).total_seconds()) < 60
    attach_as_http = await server.http.get("/sessions/box/attach")  # WebSocket only
    assert attach_as_http.status_code == 404
    wrong = await server.http.put("/metrics")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, HEAD"
    moved = await server.http.get("/sessions/", params={"a": "1"})
    assert moved.status_code == 307
    assert moved.headers["location"].endswith("/sessions?a=1")
    head = await server.http.head("/healthz")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "2")
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        ok = await server.http.request(method, "/healthz")
        assert (ok.status_code, ok.text, ok.headers["content-type"]) == (
            200,
            "ok",
            "text/plain; charset=utf-8",
        )


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(start_server: Any) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer owner-token\r\n\r\n"
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        data = await asyncio.wait_for(_rest(reader), 10)
    finally:
        writer.close()
    lines = re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+", data)
    assert lines == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"]
    assert b'{"sessions":["box"]}' in data or b'{"sessions":[]}' in data


async def test_an_idle_keep_alive_connection_is_closed(
    start_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pty_server, "KEEP_ALIVE_TIMEOUT", 0.3)
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answered = await asyncio.wait_for(_rest(reader), 10)  # EOF: closed once idle
    finally:
        writer.close()
    assert answered.startswith(b"HTTP/1.1 200 OK") and answered.endswith(b"ok")


async def test_a_body_error_is_a_400_naming_the_field_never_a_500(start_server: Any) -> None:
    server = await start_server()
    auth = {"Authorization": f"Bearer {OWNER}"}
    bad = await server.http.post("/sessions", content=b"{nope", headers=auth)
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("body is not valid JSON")
    rows = await server.http.post("/sessions", json={"rows": 0, "extraArgs": [1]}, headers=auth)
    assert rows.json() == {
        "error": "invalid-request",
        "detail": "extraArgs.0: Input should be a valid string; "
        "rows: Input should be greater than or equal to 1",
    }
    listed = await server.http.post("/sessions", json=[1], headers=auth)
    assert listed.json()["detail"] == "body must be a JSON object"


# ------------------------------------------------------------------ WebSocket handshake
async def test_handshake_errors_are_plain_http_answers(start_server: Any) -> None:
    server = await start_server()
    bad_key = await exchange(server.port, upgrade("/sessions/box/attach", key="short"))
    assert status_of(bad_key) == 400
    assert b"Sec-WebSocket-Key" in bad_key
    old = await exchange(server.port, upgrade("/sessions/box/attach", version="8"))
    assert status_of(old) == 426
    assert b"sec-websocket-version: 13" in old.lower()
    posted = upgrade("/sessions/box/attach").replace(b"GET ", b"POST ", 1)
    assert status_of(await exchange(server.port, posted)) == 400
    elsewhere = await exchange(server.port, upgrade("/healthz"))
    assert status_of(elsewhere) == 403


async def test_an_unknown_session_without_a_spec_is_an_http_404(start_server: Any) -> None:
    server = await start_server(default_agent="")
    response = await exchange(
        server.port,
        upgrade("/sessions/nothing-here/attach", extra=f"Authorization: Bearer {OWNER}\r\n"),
    )
    assert status_of(response) == 404
    assert b'"error":"not-found"' in response


async def test_the_handshake_answers_the_key_and_the_offered_subprotocol(
    start_server: Any,
) -> None:
    server = await start_server()
    ws = await server.attach("box", subprotocols=["chat", "sandbox.v2"])
    assert ws.subprotocol == "sandbox.v2"
    raw = await server.attach("box", subprotocols=["chat"])
    assert raw.subprotocol is None  # raw attach: no subprotocol chosen
    assert b"agent ready" in await read_until(raw, b"agent ready")


@pytest.mark.parametrize(
    ("token", "headers", "reason"),
    [
        (None, {}, "unauthenticated"),  # no token
        (STRANGER, {}, "forbidden"),  # not the owner nor an admin of its org
        (OWNER, {"Origin": "http://evil.example"}, "origin not allowed"),
        (None, {"X-Sandbox-Share-Grant": "x.y.z"}, "share-grant-invalid"),  # no key here
    ],
)
async def test_refusals_are_close_frames_after_the_upgrade(
    start_server: Any, token, headers, reason
) -> None:
    server = await start_server()
    ws = await server.attach("box", token=token, additional_headers=headers)
    await asyncio.wait_for(_drain(ws), 10)
    assert ws.close_code == 1008
    assert reason in (ws.close_reason or "")


async def test_the_token_may_come_as_a_query_parameter_or_a_cookie(start_server: Any) -> None:
    server = await start_server()
    by_query = await server.attach("box", token=None, query={"access_token": OWNER})
    await read_until(by_query, b"agent ready")
    by_cookie = await server.attach(
        "box", token=None, additional_headers={"Cookie": f"other=1; catalyst_session={OWNER}"}
    )
    await read_until(by_cookie, b"agent ready")
    same_origin = await server.attach(
        "box", additional_headers={"Origin": f"http://127.0.0.1:{server.port}"}
    )
    await read_until(same_origin, b"agent ready")


# ------------------------------------------------------------------ frames and keepalive
async def test_frames_after_the_handshake_in_the_same_packet_are_read(start_server: Any) -> None:
    server = await start_server()
    mask = os.urandom(4)
    payload = b"hello\n"
    frame = bytes((0x80 | OP_TEXT, 0x80 | len(payload))) + mask
    frame += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            upgrade("/sessions/box/attach", extra=f"Authorization: Bearer {OWNER}\r\n") + frame
        )
        await writer.drain()
        seen = b""
        while b"agent: HELLO" not in seen:
            seen += await asyncio.wait_for(reader.read(65536), 10)
        assert seen.startswith(b"HTTP/1.1 101 Switching Protocols")
    finally:
        writer.close()


async def test_a_peer_that_never_answers_pings_is_closed_1011(
    start_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pty_server, "PING_INTERVAL", 0.2)
    monkeypatch.setattr(pty_server, "PING_TIMEOUT", 0.3)
    server = await start_server()
    answering = await server.attach("box")  # the websockets client answers pings
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(upgrade("/sessions/box/attach", extra=f"Authorization: Bearer {OWNER}\r\n"))
        await writer.drain()
        seen = await asyncio.wait_for(_rest(reader), 10)  # read, never pong, until closed
    finally:
        writer.close()
    opcodes = _server_opcodes(seen.split(b"\r\n\r\n", 1)[1])
    assert OP_PING in opcodes
    assert opcodes[-1] == OP_CLOSE
    assert seen.endswith(b"keepalive ping timeout")
    assert int.from_bytes(seen[-len(b"keepalive ping timeout") - 2 :][:2], "big") == 1011
    await read_until(answering, b"agent ready")
    await answering.send("still here\n")
    await read_until(answering, b"agent: STILL HERE")  # pongs kept it open


async def _drain(ws: Any) -> None:
    """Read until the server closes (a raw viewer gets the refusal's text first)."""
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            await ws.recv()


def _server_opcodes(data: bytes) -> list[int]:
    """The opcodes of the unmasked server frames in ``data``."""
    out, pos = [], 0
    while pos + 2 <= len(data):
        opcode, size = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if size == 126:
            size = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
        elif size == 127:
            size = int.from_bytes(data[pos : pos + 8], "big")
            pos += 8
        out.append(opcode)
        pos += size
    return out


async def test_shutdown_closes_websockets_1012(tmp_path: Any) -> None:
    from pty_harness import start_pty_server

    handle, task, running = await start_pty_server(tmp_path)
    ws = await running.attach("box")
    await read_until(ws, b"agent ready")
    handle.should_exit = True
    await asyncio.wait_for(task, 30)
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1012
    await running.http.aclose()


async def test_metrics_are_prometheus_text_built_at_the_first_scrape(start_server: Any) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST

    server = await start_server()
    ws = await server.attach("box")
    await read_until(ws, b"agent ready")
    scraped = await server.http.get("/metrics")
    assert scraped.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "pty_server_websocket_connections 1.0" in scraped.text  # counted before the scrape
    assert "pty_server_sessions 1.0" in scraped.text
