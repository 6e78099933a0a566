"""Terminals that ended are started again on the next attach, and the viewer is told."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import websockets

from openova_sandbox.store.sql import SqlStore

SESSIONS = "/api/v1/sandbox/sessions"
AGENTS = [{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"], "requiredEnv": []}]


def wait_ready(api, h, sid):
    deadline = time.monotonic() + 10
    while api.http.get(f"{SESSIONS}/{sid}", headers=h).json().get("phase") != "Ready":
        assert time.monotonic() < deadline
        time.sleep(0.05)


async def drain(url: str, send: str | None = None, needle: bytes | None = None) -> bytes:
    seen = b""
    async with websockets.connect(url) as ws:
        seen += await asyncio.wait_for(ws.recv(), 10)
        if send:
            await ws.send(send)
        if needle:
            async with asyncio.timeout(10):
                with contextlib.suppress(websockets.ConnectionClosed):
                    while needle not in seen:
                        seen += await ws.recv()
    return seen


def test_an_agent_that_exited_is_started_again_with_a_banner(make_api, tmp_path):
    (tmp_path / "agents.json").write_text(json.dumps(AGENTS))
    api = make_api(store="memory")
    h = api.auth()
    api.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    wait_ready(api, h, "box")
    url = f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={api.token()}"

    async def scenario():
        async with websockets.connect(url) as ws:
            await ws.recv()
            await ws.send("exit 3\n")
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1000
        again = await drain(url, "echo back-$((2+2))\n", b"back-4")
        assert b"the agent exited (code 3); started it again" in again

    asyncio.run(scenario())


def test_after_a_server_restart_the_agent_is_respawned_with_a_banner(make_api, tmp_path):
    (tmp_path / "agents.json").write_text(json.dumps(AGENTS))
    first = make_api(store="sql")
    h = first.auth()
    first.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    wait_ready(first, h, "box")
    url = f"{first.server.ws_url}{SESSIONS}/box/attach?access_token={first.token()}"
    asyncio.run(drain(url, "echo before\n", b"before"))

    async def last_activity():
        store = SqlStore(first.deps.settings.effective_database_url)
        await store.start()
        try:
            return (await store.get("acme", "box")).status.last_activity_at
        finally:
            await store.close()

    deadline = time.monotonic() + 15  # the controller's sweep records activity
    while asyncio.run(last_activity()) is None:
        assert time.monotonic() < deadline, "lastActivityAt never recorded"
        time.sleep(0.2)

    second = make_api(store="sql")  # a new `sandbox serve` over the same data dir
    assert second.http.get(f"{SESSIONS}/box", headers=second.auth()).json()["status"] == "running"
    url2 = f"{second.server.ws_url}{SESSIONS}/box/attach?access_token={second.token()}"
    seen = asyncio.run(drain(url2, "echo after-$((1+1))\n", b"after-2"))
    assert b"the server restarted" in seen
