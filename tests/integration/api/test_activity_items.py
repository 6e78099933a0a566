"""Embedded mode: a session item carries its primary terminal's ``activity``."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websockets

from openova_sandbox.domain.catalogue import Catalogue

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


def test_the_embedded_server_posts_transitions_to_the_webhook(make_api, tmp_path):
    (tmp_path / "agents.json").write_text(json.dumps(AGENTS))
    posts: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_POST(self) -> None:
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        api = make_api(store="memory", notify_webhook=hook)
        h = api.auth()
        api.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
        url = f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={api.token()}"

        async def scenario() -> None:
            async with websockets.connect(url) as ws:  # the terminal starts at attach
                await asyncio.wait_for(ws.recv(), 10)
                async with asyncio.timeout(10):
                    while not posts:
                        await asyncio.sleep(0.05)

        asyncio.run(scenario())
        assert posts[0]["state"] == "waiting" and posts[0]["previous"] == "busy"
        assert posts[0]["sandbox"] == "box" and posts[0]["namespace"] == "acme"
        assert posts[0]["owner"] == "dev@acme.com" and posts[0]["terminal"] == "box"
    finally:
        server.shutdown()
        server.server_close()


def test_the_pty_server_takes_the_webhook_from_its_settings(tmp_path):
    from openova_sandbox.api.terminal_edge.standalone import build_standalone_app
    from openova_sandbox.config import load_settings
    from openova_sandbox.services.notify import ActivityWebhook
    from openova_sandbox.terminal.registry import TerminalRegistry

    async def nobody(token: str):
        raise AssertionError("not called")

    for url, hooked in (("https://u:p@hooks.example/x", True), ("", False)):
        registry = TerminalRegistry(catalogue=Catalogue())
        settings = load_settings(data_dir=tmp_path, pty_sandbox_id="box", notify_webhook=url)
        build_standalone_app(settings, authenticate=nobody, registry=registry)
        found = [h for h in registry.activity_listeners if isinstance(h, ActivityWebhook)]
        assert bool(found) is hooked
        if found:
            assert found[0].where == "https://hooks.example/x"
