"""Using a preview is the sandbox's activity in embedded mode (docs/mcp.md, "Previews";
services/preview_use.py): a real embedded server (``sandbox serve``'s app under
uvicorn), a real sandbox made Ready by the embedded controller with no terminal open,
real preview processes started through the MCP client, and the ``/preview/`` proxy
reached with real HTTP and WebSocket clients. The controller's sweep records activity
in ``status.lastActivityAt``: a preview running with nobody using it records none; a
request through the proxy does; an open WebSocket is use for as long as it is open
(``PreviewHost.last_activity`` says "now"), its close the last use.

Embedded sandboxes are not suspended for idleness (docs/lifecycle.md): what this mode
decides with the activity is ``status.lastActivityAt``; the suspension itself is the
operator's (tests/kube/test_preview_use_idle.py)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from websockets.asyncio.client import connect

from openova_sandbox.controller.runner import EmbeddedController
from openova_sandbox.domain.model import Sandbox
from openova_sandbox.services.previews import PreviewsService
from openova_sandbox.testing.server import free_port
from support.mcp_world import McpWorld, Person, mcp_world
from support.waiting import until

ADA = Person("sub-ada", "ada@acme.com", "acme")
PYTHON = "/usr/bin/python3"
# a dev server's live-reload socket: says hello, then waits (no frame flows)
WS_ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve

async def hello(ws):
    await ws.send("path=" + ws.request.path)
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(hello, "127.0.0.1", int(sys.argv[1])):
        await asyncio.Future()

asyncio.run(main())
"""


def controller(world: McpWorld) -> EmbeddedController:
    return next(b for b in world.deps.background if isinstance(b, EmbeddedController))


async def sweeps(world: McpWorld, count: int) -> None:
    """The controller's sweep run ``count`` times (what its timer does every few
    seconds), each followed by every pass it queued."""
    ctl = controller(world)
    for _ in range(count):
        await ctl.sweep()
        await ctl.wait_idle()


async def later(seconds: float) -> None:
    """Until the clock is ``seconds`` past now: what is checked is how use ages."""
    end = datetime.now(UTC) + timedelta(seconds=seconds)

    async def passed() -> bool:
        return datetime.now(UTC) >= end

    await until(f"{seconds}s to pass", passed)


async def recorded(world: McpWorld, sandbox: Sandbox) -> datetime | None:
    stored = await world.deps.store.get(sandbox.namespace, sandbox.name)
    return stored.status.last_activity_at


async def test_a_used_preview_is_activity_and_an_unused_one_is_not(tmp_path: Path) -> None:
    async with mcp_world(tmp_path, isolation="none") as world:
        sandbox = await world.create(ADA)
        await world.ready(ADA, sandbox.name)
        previews = world.deps.previews
        assert isinstance(previews, PreviewsService)
        workspace = previews._context(sandbox).workdir
        Path(workspace, "index.html").write_text("in use")
        Path(workspace, "ws_echo.py").write_text(WS_ECHO)
        served, socket_port = free_port(), free_port()
        async with world.client(world.mcp_token(sandbox)) as client:
            for port, command in (
                (served, f"exec {PYTHON} -m http.server {served} --bind 127.0.0.1"),
                (socket_port, f"exec {sys.executable} ws_echo.py {socket_port}"),
            ):
                started = await client.call_tool(
                    "preview.start", {"port": port, "command": command}
                )
                assert not started.is_error, started.content
                assert started.structured_content["status"] == "listening"

        # running, nobody using them, no terminal: no activity on record, sweep after sweep
        await sweeps(world, 2)
        assert await recorded(world, sandbox) is None
        assert previews.last_used(sandbox.namespace, sandbox.name) is None

        # one request through the proxy (the link, then the capability path): activity
        before = datetime.now(UTC)
        link = f"/preview/{sandbox.name}/{served}/"
        sent = await world.http.get(link, headers=world.auth(ADA))
        assert sent.status_code == 307, sent.text
        page = await world.http.get(sent.headers["location"])
        assert (page.status_code, page.text) == (200, "in use")
        after = datetime.now(UTC)

        async def on_record() -> datetime | None:
            return await recorded(world, sandbox)

        first = await until("lastActivityAt", on_record)
        assert before <= first <= after, (before, first, after)

        # an open WebSocket: "now" for as long as it is open, though no frame flows
        url = world.url.replace("http://", "ws://") + f"/preview/{sandbox.name}/{socket_port}/"
        host = controller(world).runtime._terminals  # the PreviewHost the sweep asks
        async with connect(url, additional_headers=world.auth(ADA), proxy=None) as ws:
            assert (await ws.recv()).startswith("path=/")
            quiet_since = datetime.now(UTC)
            await later(1.5)  # no frame either way meanwhile
            await sweeps(world, 1)
            asked = datetime.now(UTC)
            seen = host.last_activity(sandbox.namespace, sandbox.name)
            assert seen is not None and seen > quiet_since + timedelta(seconds=1)
            assert asked - timedelta(seconds=0.5) <= seen <= datetime.now(UTC)

        async def closed() -> bool:
            return not previews.use.held()

        await until("the proxy's side closed", closed)
        last = previews.last_used(sandbox.namespace, sandbox.name)
        assert last is not None
        await later(1.5)
        await sweeps(world, 1)
        # closed: its close is the last use, however long ago that becomes
        assert host.last_activity(sandbox.namespace, sandbox.name) == last
        assert datetime.now(UTC) - last > timedelta(seconds=1)
        # the sweep's record moves by 30 s steps (ACTIVITY_RESOLUTION): still the first
        assert await recorded(world, sandbox) == first
