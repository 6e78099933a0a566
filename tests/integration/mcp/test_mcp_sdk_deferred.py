"""The MCP SDK is imported at the first ``/mcp`` request, not at start (docs/mcp.md,
"Server and tokens"; ``mcp/server.py``): ~0.9 s of every ``sandbox serve`` start went
to importing it. What must not change: the first request is served like any other
(concurrent first requests build the SDK's server once), the first client's
subscriptions hear their updates, and ``McpReady`` says ``Serving`` of a server that
answers.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.domain.errors import BackendUnavailable
from openova_sandbox.mcp.server import McpServer
from support.mcp_updates import subscriber
from support.mcp_world import McpWorld, Person, mcp_world

pytestmark = pytest.mark.timeout(120)
SESSIONS = "/api/v1/sandbox/sessions"
ADA = Person("ada-sub", "ada@acme.com", "acme")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "first-request-test", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}

# a real server in a process of its own: which SDK modules are loaded at each step
PROBE = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path

    def sdk():
        return sorted(m for m in sys.modules if m == "mcp" or m.startswith(("mcp.", "mcp_types")))

    seen = {}
    import openova_sandbox.api.composition  # noqa: E402
    seen["composition"] = sdk()
    import httpx
    from openova_sandbox.api.app import create_app
    from openova_sandbox.api.composition import build_embedded
    from openova_sandbox.auth.issuer import EmbeddedIssuer
    from openova_sandbox.config import load_settings
    from openova_sandbox.testing.server import serve_in_thread

    data = Path(tempfile.mkdtemp())
    agents = data / "agents.json"
    agents.write_text(json.dumps([{"slug": "shell", "binary": "/bin/sh", "defaultArgs": ["-i"]}]))
    deps = build_embedded(
        load_settings(data_dir=data / "data", agents_path=str(agents), isolation="none")
    )
    with serve_in_thread(create_app(deps)) as running:
        http = httpx.Client(base_url=running.url, timeout=30)
        assert http.get("/healthz").status_code == 200
        token = EmbeddedIssuer.load(data / "data").mint(sub="s", email="a@acme.com", org="acme")
        made = http.post("/api/v1/sandbox/sessions", json={"agent": "shell", "name": "box"},
                         headers={"Authorization": f"Bearer {token}"})
        assert made.status_code == 201, made.text
        seen["serving"] = sdk()
        import asyncio
        box = asyncio.run(deps.store.get("acme", "box"))
        answer = http.post("/mcp", json=INITIALIZE, headers={
            **MCP_HEADERS, "Authorization": f"Bearer {deps.mcp_tokens.issue(box)}"})
        seen["first_mcp_status"] = answer.status_code
        seen["first_mcp_server"] = answer.json()["result"]["serverInfo"]["name"]
        seen["after_first_mcp"] = sdk()
    print(json.dumps(seen))
    """
)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[McpWorld]:
    async with mcp_world(tmp_path, isolation="none") as made:
        yield made


def test_the_sdk_is_loaded_by_the_first_mcp_request_not_by_start() -> None:
    script = f"INITIALIZE = {INITIALIZE!r}\nMCP_HEADERS = {MCP_HEADERS!r}\n{PROBE}"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["composition"] == []
    assert seen["serving"] == []  # started, answered /healthz and a create
    assert seen["first_mcp_status"] == 200
    assert seen["first_mcp_server"] == "openova-sandbox"
    # the check sees the SDK once it is there (it is not vacuous)
    assert {"mcp", "mcp_types", "mcp.server.streamable_http_manager"} <= set(
        seen["after_first_mcp"]
    )


async def test_concurrent_first_requests_build_the_sdk_server_once(world: McpWorld) -> None:
    server: McpServer = world.deps.mcp
    assert server.manager is None  # nothing has asked yet
    builds, entered, everyone_in = 0, 0, asyncio.Event()
    build, manager_of = server._build, server.sdk_manager

    async def counted_entry() -> Any:
        nonlocal entered
        entered += 1
        if entered == 8:
            everyone_in.set()
        return await manager_of()

    async def counted_build() -> None:
        nonlocal builds
        builds += 1
        await everyone_in.wait()  # all eight are asking before the first build goes on
        await build()

    server.sdk_manager = counted_entry  # type: ignore[method-assign]
    server._build = counted_build  # type: ignore[method-assign]
    box = await world.create(ADA, name="box")
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {world.mcp_token(box)}"}
    answers = await asyncio.gather(
        *(world.http.post("/mcp", json=INITIALIZE, headers=headers) for _ in range(8))
    )
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert {a.json()["result"]["serverInfo"]["name"] for a in answers} == {"openova-sandbox"}
    assert builds == 1
    # a wrong token builds nothing and is refused as before
    refused = await world.http.post(
        "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer nope"}
    )
    assert refused.status_code == 401


async def test_an_unauthenticated_request_does_not_build_it(world: McpWorld) -> None:
    refused = await world.http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert refused.status_code == 401
    assert world.deps.mcp.manager is None


async def test_the_first_client_subscribes_and_hears_updates(world: McpWorld) -> None:
    box = await world.create(ADA, name="box")
    await world.ready(ADA, "box")
    # McpReady says Serving before anything has asked /mcp, and it answers: honest
    item = (await world.http.get(f"{SESSIONS}/box", headers=world.auth(ADA))).json()
    ready = {c["type"]: c for c in item["conditions"]}["McpReady"]
    assert (ready["status"], ready["reason"]) == ("True", "Serving"), ready
    assert world.deps.mcp.manager is None
    terminals = "openova://sandbox/box/terminals"
    async with subscriber(world, box) as (client, updates):
        resources = client.server_capabilities.resources
        assert resources is not None and resources.subscribe is True
        await client.subscribe_resource(terminals)
        start = time.monotonic()
        opened = await world.http.post(
            f"{SESSIONS}/box/terminals", json={"agent": "shell"}, headers=world.auth(ADA)
        )
        assert opened.status_code == 201, opened.text
        await updates.next_for(terminals, after=start, timeout=10)
        listed = await client.read_resource(terminals)
        payload: dict[str, Any] = json.loads(listed.contents[0].text)  # type: ignore[union-attr]
        assert opened.json()["id"] in {t["id"] for t in payload["terminals"]}


async def test_a_stopped_server_answers_503_and_a_server_without_the_sdk_does_not_start(
    world: McpWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = await world.create(ADA, name="box")
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {world.mcp_token(box)}"}
    assert (await world.http.post("/mcp", json=INITIALIZE, headers=headers)).status_code == 200
    await world.deps.mcp.stop()
    stopped = await world.http.post("/mcp", json=INITIALIZE, headers=headers)
    assert stopped.status_code == 503
    assert stopped.json()["error"]["data"]["error"] == "mcp-unavailable"
    await world.deps.mcp.start()  # and again: a fresh SDK server
    again = await world.http.post("/mcp", json=INITIALIZE, headers=headers)
    assert again.status_code == 200, again.text

    import openova_sandbox.mcp.server as module

    fresh = McpServer(world.deps.mcp.services, world.deps.mcp.tokens)
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailable, match="MCP SDK is not installed"):
        await fresh.start()
    assert not fresh.running
