"""A real agent uses the sandbox's MCP server through its own MCP client (issue 14, item 5:
"agents configured automatically"; the bar: a feature for agents is done when a real
agent uses it).

The whole embedded server (``sandbox serve``'s composition, SQLite store) runs under
uvicorn with ``/mcp`` mounted; its model gateway's provider is the fake OpenAI-compatible
model server (support/fake_llm.py) with a scripted answer: a prompt holding the trigger
word is answered with a call of ``session.whoami`` under whatever name the agent gives
the MCP server's tool (qwen-code 0.15 first reveals its MCP tools with ``tool_search``;
opencode offers them as ``openova-sandbox_session_whoami``). Real qwen-code and opencode,
installed with ``sandbox agents install``, are created through the API and driven over
the attach WebSocket as the console does. Nothing in the test writes the agent's MCP
config: the spawn path does. Then:

- the call arrives at the real MCP server for this sandbox (its namespace, name and uid),
  and its result is in the model's next request (the uid only the server knows);
- the agent's processes have ``SANDBOX_MCP_URL`` (this server's ``/mcp``) and the MCP
  token; no file of the HOME, the workspace or the data dir holds the token;
- ``McpReady`` is ``True``/``Serving``;
- once the sandbox is deleted the same token gets 401 from ``/mcp``.

claude-code (no model here: the fake speaks OpenAI only) is started as a sandbox's agent
too, and its MCP client lists the real server's tools for that sandbox as it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from openova_sandbox.agents.mcp_config import CLIENTS, SERVER_NAME, entry_for
from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import Settings, load_settings
from openova_sandbox.testing.server import serve_in_thread
from support.fake_llm import FakeLLM
from support.files import holding
from support.processes import environ
from support.waiting import wait_for as wait
from support.ws_screen import WsScreen

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SESSIONS = "/api/v1/sandbox/sessions"
MODEL = "fake-coder"
READY = {"qwen-code": "Type your message", "opencode": "Ask anything"}
# qwen-code asks before it runs an MCP tool it does not trust (the first option,
# "Yes, allow once", is selected: Enter approves); opencode runs MCP tools unasked
APPROVAL = {"qwen-code": "allow once", "opencode": None}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}


def sandbox_processes(home: Path) -> list[tuple[int, dict[str, str]]]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        env = environ(int(entry.name))
        if env.get("HOME") == str(home):
            found.append((int(entry.name), env))
    return found


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as llm:
        yield llm


def embedded_settings(tmp_path: Path, data: Path, llm: FakeLLM, **extra: Any) -> Settings:
    agents = tmp_path / "agents.json"
    agents.write_text("[]")  # the built-in rows, as shipped
    return load_settings(
        data_dir=data,
        store="sql",
        agents_path=str(agents),
        openai_base_url=llm.base_url,
        openai_api_key="sk-provider-" + secrets.token_hex(8),
        agent_model=MODEL,
        **extra,
    )


def signed_in(data: Path) -> Callable[[], dict[str, str]]:
    """Headers of the sandbox owner, signed by the server's own issuer."""
    issuer = EmbeddedIssuer.load(data)

    def auth() -> dict[str, str]:
        token = issuer.mint(
            sub="user-sub-abcdef12",
            email="dev@acme.com",
            org="acme",
            roles=(),
            ttl=timedelta(minutes=10),
            extra={},
        )
        return {"Authorization": f"Bearer {token}"}

    return auth


@pytest.mark.parametrize("slug", ["qwen-code", "opencode"])
def test_a_real_agent_calls_a_tool_of_its_sandbox_through_its_own_mcp_client(
    tmp_path: Path, slug: str, installed_agents_dir: Any, fake_llm: FakeLLM
) -> None:
    data = installed_agents_dir(tmp_path / "data", slug, share=True)
    deps = build_embedded(embedded_settings(tmp_path, data, fake_llm))
    # the real server's tool calls, as they arrive (the server itself is not changed)
    arrived: list[tuple[str, str, str, str, bool]] = []
    real_call = deps.mcp.call

    async def recording(caller: Any, name: str, arguments: Any) -> Any:
        result = await real_call(caller, name, arguments)
        arrived.append((caller.namespace, caller.sandbox, caller.uid, name, result.is_error))
        return result

    deps.mcp.call = recording
    trigger = f"mcp-{secrets.token_hex(4)}"
    fake_llm.script_tool_call(trigger, "session.whoami")

    with contextlib.ExitStack() as stack:
        running = stack.enter_context(serve_in_thread(create_app(deps)))
        http = stack.enter_context(httpx.Client(base_url=running.url, timeout=20))
        auth = signed_in(data)
        created = http.post(SESSIONS, headers=auth(), json={"agent": slug, "name": "box"})
        assert created.status_code == 201, created.text

        def item() -> dict[str, Any]:
            found: dict[str, Any] = http.get(f"{SESSIONS}/box", headers=auth()).json()
            return found

        wait("running", lambda: item()["status"] == "running")
        mcp_ready = {c["type"]: c for c in item()["conditions"]}["McpReady"]
        assert (mcp_ready["status"], mcp_ready["reason"]) == ("True", "Serving"), mcp_ready
        (home,) = (data / "homes").glob("*/box")
        workspace = data / "workspaces" / home.parent.name / "box"
        attach = f"{running.ws_url}{SESSIONS}/box/attach?access_token={auth()['Authorization'][7:]}"

        async def turn() -> list[tuple[int, dict[str, str]]]:
            async with WsScreen(attach) as screen:
                await screen.wait_for(READY[slug])
                await screen.type_line(f"use the sandbox tools: {trigger}")
                # the fake model says NO-SUCH-TOOL at once when the agent offered no such tool
                approval = APPROVAL[slug]
                if approval:
                    seen = await screen.wait_for_any(approval, "NO-SUCH-TOOL")
                    assert "NO-SUCH-TOOL" not in seen, f"the agent had no MCP tool:\n{seen}"
                    await screen.press(b"\r")
                done = await screen.wait_for_any(f"TOOL-DONE-{trigger}", "NO-SUCH-TOOL")
                assert "NO-SUCH-TOOL" not in done, f"the agent had no MCP tool:\n{done}"
                return sandbox_processes(home)

        processes = asyncio.run(turn())

        # the spawn path wrote the agent's MCP config; the token is in the environment only
        client = CLIENTS[slug]
        config = json.loads((home / client.path).read_text())
        assert config[client.key][SERVER_NAME] == entry_for(client)
        assert processes, "the agent's processes were not found"
        token = processes[0][1]["SANDBOX_MCP_TOKEN"]
        box_uid = jwt.decode(token, options={"verify_signature": False})["sandbox"]["uid"]

        # the call reached the real server, for this sandbox, and it answered
        assert arrived == [("acme", "box", box_uid, "session.whoami", False)], arrived
        # ... and its result went back to the model in the agent's next request
        results = [m for _, messages in fake_llm.tool_results() for m in messages]
        whoami = [m for m in results if box_uid in json.dumps(m)]
        assert whoami, f"no tool result with the sandbox's uid reached the model: {results}"
        for pid, env in processes:
            assert env["SANDBOX_MCP_URL"] == f"{running.url}/mcp", pid
            assert env["SANDBOX_MCP_TOKEN"] == token, pid
        assert holding([home, workspace, data], token) == []

        # the token opens /mcp until the sandbox is deleted, then it is refused
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
        }
        before = http.post("/mcp", json=INITIALIZE, headers=headers)
        assert before.status_code == 200, before.text
        deleted = http.delete(f"{SESSIONS}/box", headers=auth())
        assert deleted.status_code in (200, 202, 204), deleted.text
        wait("deletion", lambda: http.get(f"{SESSIONS}/box", headers=auth()).status_code == 404)
        refused = http.post("/mcp", json=INITIALIZE, headers=headers)
        assert refused.status_code == 401, refused.text
        wait("the sandbox's processes to end", lambda: not sandbox_processes(home))


def test_claude_code_connects_to_its_sandbox_mcp_server(
    tmp_path: Path, installed_agents_dir: Any, fake_llm: FakeLLM
) -> None:
    """claude-code has no model here (the fake speaks OpenAI only), but its MCP client
    connects to the configured servers and lists their tools as it starts: started as a
    terminal of a sandbox, configured by the spawn path only, it reaches the real /mcp
    with this sandbox's token (``${NAME}`` expanded in ``~/.claude.json``, user scope)."""
    data = installed_agents_dir(tmp_path / "data", "claude-code", share=True)
    # an Anthropic provider, so claude-code's row has its gateway variables (never called)
    deps = build_embedded(
        embedded_settings(tmp_path, data, fake_llm, anthropic_api_key="sk-ant-unused")
    )
    listed: list[tuple[str, str, str]] = []  # (namespace, sandbox, uid) of each tools/list
    real_tools_for = deps.mcp.tools_for

    def recording(caller: Any) -> Any:
        listed.append((caller.namespace, caller.sandbox, caller.uid))
        return real_tools_for(caller)

    deps.mcp.tools_for = recording
    with contextlib.ExitStack() as stack:
        running = stack.enter_context(serve_in_thread(create_app(deps)))
        http = stack.enter_context(httpx.Client(base_url=running.url, timeout=20))
        auth = signed_in(data)
        created = http.post(SESSIONS, headers=auth(), json={"agent": "claude-code", "name": "box"})
        assert created.status_code == 201, created.text
        wait(
            "running",
            lambda: http.get(f"{SESSIONS}/box", headers=auth()).json()["status"] == "running",
        )
        (home,) = (data / "homes").glob("*/box")
        attach = f"{running.ws_url}{SESSIONS}/box/attach?access_token={auth()['Authorization'][7:]}"

        async def start() -> list[tuple[int, dict[str, str]]]:
            async with WsScreen(attach, cols=120) as screen:  # the attach starts the agent
                await screen.wait_for_any("\u276f", ">", timeout=90)
                await asyncio.to_thread(wait, "claude-code's tools/list", lambda: listed, 90)
                return sandbox_processes(home)

        processes = asyncio.run(start())
        entry = json.loads((home / ".claude.json").read_text())["mcpServers"][SERVER_NAME]
        assert entry == entry_for(CLIENTS["claude-code"])
        token = next(env["SANDBOX_MCP_TOKEN"] for _, env in processes)
        uid = jwt.decode(token, options={"verify_signature": False})["sandbox"]["uid"]
        assert set(listed) == {("acme", "box", uid)}, listed
        assert holding([home, data / "workspaces", data / "homes"], token) == []
