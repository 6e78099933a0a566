"""A waiting attach (the sandbox is not Ready yet) whose client leaves gives its
``waitingAttaches`` slot back at once, not when the wait would have timed out (30 s):
closed cleanly or dropped, the slots come back and a new attach waits again."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from openova_sandbox.api.routes import terminals as terminal_routes
from openova_sandbox.testing import server as server_module

if TYPE_CHECKING:
    from conftest import Api

SESSIONS = "/api/v1/sandbox/sessions"
QUOTAS = "/api/v1/sandbox/quotas"
DEV = {"sub": "sub-dev-0001", "email": "dev@acme.com", "org": "acme"}


@pytest.fixture
def hanging_git() -> Iterator[str]:
    """A TCP server that accepts and never answers: a clone from it hangs, so the
    sandbox stays Provisioning."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


async def _waiting(api: Api, client: httpx.AsyncClient, count: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        got = await client.get(QUOTAS, headers=api.auth(**DEV))
        if got.json()["user"]["usage"]["waitingAttaches"] == count:
            return
        assert time.monotonic() < deadline, f"waiting attaches never {count}: {got.json()}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("path", ["lean", "asgi"])
def test_waiting_attaches_whose_clients_left_release_their_slots_at_once(
    make_api: Any, hanging_git: str, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    assert terminal_routes.READY_WAIT >= 30  # the wait itself ends far later than this test
    if path == "asgi":  # uvicorn's own WebSocket protocol: frames come through ASGI
        monkeypatch.setitem(server_module.UVICORN_OPTIONS, "ws", WebSocketsSansIOProtocol)
    api: Api = make_api(store="memory", git_base_url=hanging_git, quota_user="waitingAttaches=3")
    made = api.http.post(
        SESSIONS,
        headers=api.auth(**DEV),
        json={"agent": "aider", "name": "slow", "repo": "acme/site"},
    )
    assert made.status_code == 201, made.text
    url = f"{api.server.ws_url}{SESSIONS}/slow/attach?access_token={api.token(**DEV)}"

    async def scenario() -> tuple[float, int | None]:
        async with asyncio.timeout(40), httpx.AsyncClient(base_url=api.url) as client:
            clients = [await websockets.connect(url) for _ in range(3)]
            await _waiting(api, client, 3)
            # the quota is full: a fourth is refused at once
            async with websockets.connect(url) as extra:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await extra.recv()
                assert extra.close_code == 1013, extra.close_code
            # two leave with a close frame, one drops the connection without one
            await clients[0].close()
            await clients[1].close()
            clients[2].transport.abort()
            left = time.monotonic()
            await _waiting(api, client, 0)
            released = time.monotonic() - left
            # and a new attach is admitted: it waits (holds a slot) instead of a 1013
            async with websockets.connect(url) as again:
                await _waiting(api, client, 1)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(again.wait_closed(), 0.5)
                code = again.close_code
            await _waiting(api, client, 0)
            return released, code

    released, code = asyncio.run(scenario())
    assert code is None  # still waiting when the test left, not refused
    assert released < 10
