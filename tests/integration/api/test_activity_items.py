"""Embedded mode: a session item carries its primary terminal's ``activity``."""

from __future__ import annotations

import asyncio
import json
import time

import websockets

SESSIONS = "/api/v1/sandbox/sessions"
# a shell as the agent; its prompt is "$ " (the override row's promptPatterns)
AGENTS = [
    {
        "slug": "aider",
        "binary": "/bin/sh",
        "defaultArgs": ["-i"],
        "requiredEnv": [],
        "promptPatterns": [r"[$#]\Z"],
    }
]


def _item_activity(api, h, want: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        item = api.http.get(f"{SESSIONS}/box", headers=h).json()
        if item.get("activity") == want:
            return item
        assert time.monotonic() < deadline, item
        time.sleep(0.05)


def test_the_item_says_whether_the_agent_works_or_waits(make_api, tmp_path):
    (tmp_path / "agents.json").write_text(json.dumps(AGENTS))
    api = make_api(store="memory")
    h = api.auth()
    created = api.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    assert created.status_code == 201, created.text
    url = f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={api.token()}"

    async def scenario() -> None:
        async with websockets.connect(url) as ws:
            await asyncio.wait_for(ws.recv(), 10)
            await asyncio.to_thread(_item_activity, api, h, "waiting")
            listed = api.http.get(SESSIONS, headers=h).json()["sandboxes"]
            assert [i.get("activity") for i in listed] == ["waiting"]
            await ws.send("sleep 5\n")  # the prompt is gone and nothing is said: busy
            await asyncio.to_thread(_item_activity, api, h, "busy")

    asyncio.run(scenario())
