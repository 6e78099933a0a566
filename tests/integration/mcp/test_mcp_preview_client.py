"""``preview.*`` through the official MCP client against a real embedded server (``/mcp``,
a real MCP token, a sandbox made Ready by the controller, isolation as the machine
allows): the tools listed, a ``python3 -m http.server`` started by ``preview.start``,
its URL fetched through the proxy by the owner (bearer), refused to another user (404)
and to nobody (401), listed, stopped; bad arguments answered as tool errors; the
``k8s.read.*`` tools not listed in embedded mode."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from openova_sandbox.testing.server import free_port
from support.mcp_updates import subscriber
from support.mcp_world import McpWorld, Person, mcp_world

ADA = Person("sub-ada", "ada@acme.com", "acme")
BOB = Person("sub-bob", "bob@acme.com", "acme")
PYTHON = "/usr/bin/python3"  # the system's: the sandbox's view shows /usr


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[McpWorld]:
    async with mcp_world(tmp_path) as made:  # the default plan has preview.*
        yield made


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    return data


async def test_preview_through_the_mcp_client_and_the_proxy(world: McpWorld) -> None:
    sandbox = await world.create(ADA)
    await world.ready(ADA, sandbox.name)
    workspace = world.deps.previews._context(sandbox).workdir
    Path(workspace, "index.html").write_text("served by the sandbox")
    port = free_port()

    async with world.client(world.mcp_token(sandbox)) as client:
        names = {t.title for t in (await client.list_tools()).tools}
        assert {"preview.start", "preview.stop", "preview.list"} <= names
        assert not any(n.startswith("k8s.read.") for n in names)  # no cluster here

        started = ok(
            await client.call_tool(
                "preview.start",
                {"port": port, "command": f"exec {PYTHON} -m http.server {port} --bind 127.0.0.1"},
            )
        )
        assert started["status"] == "listening", started
        assert started["url"] == f"{world.url}/preview/{sandbox.name}/{port}/"

        page = await world.http.get(started["url"], headers=world.auth(ADA), follow_redirects=True)
        assert page.status_code == 200 and page.text == "served by the sandbox"
        assert (await world.http.get(started["url"])).status_code == 401
        assert (await world.http.get(started["url"], headers=world.auth(BOB))).status_code == 404
        # the MCP token is the sandbox's, not a user's: the proxy does not take it
        as_mcp = {"Authorization": f"Bearer {world.mcp_token(sandbox)}"}
        assert (await world.http.get(started["url"], headers=as_mcp)).status_code == 401

        listed = ok(await client.call_tool("preview.list", {}))
        assert [(p["port"], p["status"]) for p in listed["previews"]] == [(port, "listening")]

        # the schema refuses what the handler would too, as a tool error with a detail
        refused = await client.call_tool("preview.start", {"port": 80, "command": "true"})
        assert refused.is_error
        taken = await client.call_tool(
            "preview.start", {"port": port, "command": "exec sleep 60", "wait": 0}
        )
        assert taken.is_error and taken.structured_content["error"] == "preview-exists"

        stopped = ok(await client.call_tool("preview.stop", {"port": port}))
        assert stopped["status"] == "exited"
        assert ok(await client.call_tool("preview.list", {}))["previews"] == []
    gone = await world.http.get(started["url"], headers=world.auth(ADA))
    assert gone.status_code == 404


@pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")
async def test_a_preview_resource_follows_start_exit_and_stop(world: McpWorld) -> None:
    """``openova://preview/{id}/{port}``: read, and updated (within a second) when the
    preview starts, exits of itself and is started again then stopped."""
    sandbox = await world.create(ADA)
    await world.ready(ADA, sandbox.name)
    port = free_port()
    uri = f"openova://preview/{sandbox.name}/{port}"
    async with subscriber(world, sandbox) as (client, updates):
        await client.subscribe_resource(uri)
        before = time.monotonic()
        ok(await client.call_tool("preview.start", {"port": port, "command": "exit 5"}))
        await updates.next_for(uri, after=before)  # started (and exited)
        read = await client.read_resource(uri)
        content = read.contents[0]
        assert isinstance(content, types.TextResourceContents)
        shown = json.loads(content.text)
        assert (shown["status"], shown.get("exitCode")) == ("exited", 5)

        command = f"exec {PYTHON} -m http.server {port} --bind 127.0.0.1"
        ok(await client.call_tool("preview.start", {"port": port, "command": command}))
        stopping = time.monotonic()
        ok(await client.call_tool("preview.stop", {"port": port}))
        assert await updates.next_for(uri, after=stopping) - stopping < 1.0


WS_ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    await ws.send("path=" + ws.request.path + " auth=" + str("authorization" in ws.request.headers))
    async for message in ws:
        await ws.send(message if isinstance(message, bytes) else "echo:" + message)

async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), subprotocols=["hmr"]):
        await asyncio.Future()

asyncio.run(main())
"""


async def test_a_websocket_is_relayed_to_the_owner_only(tmp_path: Path) -> None:
    """A dev server's live-reload socket: upgraded through the proxy with the owner's
    bearer (the preview sees neither the token nor the prefix), its subprotocol
    accepted, text and bytes relayed; another user's and a foreign origin's handshakes
    refused. Without isolation: the preview runs this venv's Python (``websockets``)."""
    async with mcp_world(tmp_path, isolation="none") as world:
        sandbox = await world.create(ADA)
        await world.ready(ADA, sandbox.name)
        workspace = world.deps.previews._context(sandbox).workdir
        Path(workspace, "ws_echo.py").write_text(WS_ECHO)
        port = free_port()
        async with world.client(world.mcp_token(sandbox)) as client:
            started = ok(
                await client.call_tool(
                    "preview.start",
                    {"port": port, "command": f"exec {sys.executable} ws_echo.py {port}"},
                )
            )
        assert started["status"] == "listening", started
        url = started["url"].replace("http://", "ws://") + "live?x=1"
        async with connect(
            url, additional_headers=world.auth(ADA), subprotocols=["hmr"], proxy=None
        ) as ws:
            assert ws.subprotocol == "hmr"
            assert await ws.recv() == "path=/live?x=1 auth=False"
            await ws.send("hello")
            assert await ws.recv() == "echo:hello"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
        for headers in (world.auth(BOB), {}, {**world.auth(ADA), "Origin": "http://evil.example"}):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=headers, proxy=None):
                    pass
            assert refused.value.response.status_code == 403

        # under the capability path: the grant alone, from the page's opaque origin
        # (what Chromium sends from a sandboxed page); refused once the preview stops
        sent = await world.http.get(started["url"], headers=world.auth(ADA))
        capability = world.url.replace("http://", "ws://") + sent.headers["location"]
        async with connect(
            f"{capability}live",
            additional_headers={"Origin": "null"},
            subprotocols=["hmr"],
            proxy=None,
        ) as ws:
            assert await ws.recv() == "path=/live auth=False"
            await ws.send("again")
            assert await ws.recv() == "echo:again"
        forged = capability.replace("~", "~x", 1)
        async with world.client(world.mcp_token(sandbox)) as client:
            for url_, stop in ((forged, False), (capability, True)):
                if stop:
                    ok(await client.call_tool("preview.stop", {"port": port}))
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(f"{url_}live", subprotocols=["hmr"], proxy=None):
                        pass
                assert refused.value.response.status_code == 403
