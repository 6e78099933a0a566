"""Live connections end when their token expires (issue 11, item 5): a terminal
WebSocket closes 1008 ``token-expired``, the resources stream sends ``event: end``."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx
import websockets

SESSIONS = "/api/v1/sandbox/sessions"
STREAM = "/api/v1/sovereigns/local/k8s/stream"
TTL = timedelta(seconds=3)


def test_a_terminal_websocket_closes_when_its_token_expires(api):
    headers = api.auth()
    made = api.http.post(SESSIONS, headers=headers, json={"agent": "shell", "name": "box"})
    assert made.status_code == 201, made.text
    deadline = time.monotonic() + 20
    while api.http.get(f"{SESSIONS}/box", headers=headers).json().get("phase") != "Ready":
        assert time.monotonic() < deadline, "sandbox not ready"
        time.sleep(0.05)
    token = api.token(ttl=TTL)
    opened = time.monotonic()

    async def attach() -> websockets.ConnectionClosed:
        url = f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={token}"
        async with asyncio.timeout(15), websockets.connect(url) as ws:
            await ws.send(b"echo still-here\n")
            while True:
                try:
                    await ws.recv()
                except websockets.ConnectionClosed as closed:
                    return closed

    closed = asyncio.run(attach())
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "token-expired")
    assert time.monotonic() - opened < 8  # at exp, not after the 30 s leeway


def test_the_resources_stream_ends_when_its_token_expires(api):
    headers = {"Authorization": f"Bearer {api.token(ttl=TTL)}"}
    opened = time.monotonic()
    frames = []
    with (
        httpx.Client(base_url=api.url, timeout=15) as client,
        client.stream("GET", STREAM, params={"kinds": "sandbox"}, headers=headers) as answer,
    ):
        assert answer.status_code == 200
        frames.extend(answer.iter_lines())
    assert time.monotonic() - opened < 8
    assert "event: end" in frames, frames
    assert any("token-expired" in line for line in frames), frames
