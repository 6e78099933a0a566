"""Real agents reach their model through the gateway of a real embedded server, with the
sandbox's own token; no provider key ever enters the sandbox (issue 9, "Per-sandbox
credentials").

The whole server as ``sandbox serve`` builds it (SQLite store and ledger) runs under
uvicorn; its gateway's provider is the fake OpenAI-compatible model server
(support/fake_llm.py) with a provider key the server also holds in its own process
environment. Real qwen-code and opencode (installed with ``sandbox agents install``) are
created through the API and driven over the attach WebSocket like the console does; a
typed prompt is answered on screen. Then:

- the fake provider saw the provider key, never the sandbox's token;
- every process of the sandbox has the gateway URL and the token, and the provider key
  is in none of their environments (``/proc/<pid>/environ``), nor in the sandbox's HOME
  or workspace, nor anywhere in the data dir or the server's log; the token is stored
  hashed (not in the data dir either);
- the request shows in ``GET /api/v1/sandbox/usage`` and on the session item;
- once the sandbox is deleted its token gets 401 from the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.testing.server import RunningServer, serve_in_thread
from support.fake_llm import FakeLLM
from support.files import holding
from support.processes import environ
from support.waiting import wait_for
from support.ws_screen import WsScreen

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SESSIONS = "/api/v1/sandbox/sessions"
MODEL = "fake-coder"
PROVIDER_KEY = "sk-provider-SECRET-" + secrets.token_hex(8)
ANTHROPIC_KEY = "sk-ant-provider-SECRET-" + secrets.token_hex(8)
READY = {"qwen-code": "Type your message", "opencode": "Ask anything"}


class Server:
    def __init__(self, running: RunningServer, data: Path) -> None:
        self.url = running.url
        self.ws_url = running.ws_url
        self.data = data
        self.issuer = EmbeddedIssuer.load(data)
        self.http = httpx.Client(base_url=running.url, timeout=20)

    def token(self) -> str:
        return self.issuer.mint(
            sub="user-sub-abcdef12",
            email="dev@acme.com",
            org="acme",
            roles=(),
            ttl=timedelta(minutes=10),
            extra={},
        )

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def wait(self, what: str, check: Any, timeout: float = 30.0) -> Any:
        return wait_for(what, check, timeout)


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as llm:
        yield llm


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def start_server(stack: contextlib.ExitStack, tmp_path: Path, data: Path, llm: FakeLLM) -> Server:
    agents = tmp_path / "agents.json"
    agents.write_text("[]")  # the built-in rows, as shipped
    settings = load_settings(
        data_dir=data,
        store="sql",
        agents_path=str(agents),
        openai_base_url=llm.base_url,
        openai_api_key=PROVIDER_KEY,
        anthropic_api_key=ANTHROPIC_KEY,
        agent_model=MODEL,
    )
    running = stack.enter_context(serve_in_thread(create_app(build_embedded(settings))))
    server = Server(running, data)
    stack.callback(server.http.close)
    return server


def sandbox_processes(home: Path) -> list[tuple[int, dict[str, str]]]:
    """Every live process whose HOME is the sandbox's (its terminals and their children)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        env = environ(int(entry.name))
        if env.get("HOME") == str(home):
            found.append((int(entry.name), env))
    return found


@pytest.mark.parametrize("slug", ["qwen-code", "opencode"])
def test_a_real_agent_reaches_its_model_only_through_the_gateway(
    tmp_path: Path,
    slug: str,
    installed_agents_dir: Any,
    fake_llm: FakeLLM,
    stack: contextlib.ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # the server's own environment holds the provider keys as well
    monkeypatch.setenv("OPENAI_API_KEY", PROVIDER_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    data = installed_agents_dir(tmp_path / "data", slug, share=True)
    server = start_server(stack, tmp_path, data, fake_llm)
    created = server.http.post(SESSIONS, headers=server.auth(), json={"agent": slug, "name": "box"})
    assert created.status_code == 201, created.text
    server.wait(
        "running",
        lambda: (
            server.http.get(f"{SESSIONS}/box", headers=server.auth()).json()["status"] == "running"
        ),
    )
    (home,) = (data / "homes").glob("*/box")
    workspace = data / "workspaces" / home.parent.name / "box"

    word = secrets.token_hex(4)
    url = f"{server.ws_url}{SESSIONS}/box/attach?access_token={server.token()}"

    async def turn() -> list[tuple[int, dict[str, str]]]:
        async with WsScreen(url) as screen:
            await screen.wait_for(READY[slug])
            await screen.type_line(f"say ping-{word}")
            await screen.wait_for(f"PONG-{word}")
            return sandbox_processes(home)

    processes = asyncio.run(turn())

    # the provider saw its key; the sandbox's processes only ever had the token
    asked = fake_llm.wait_for(word)
    assert asked.authorization == f"Bearer {PROVIDER_KEY}"
    assert processes, "the agent's processes were not found"
    token = processes[0][1]["OPENAI_API_KEY"]
    assert token and token not in (PROVIDER_KEY, ANTHROPIC_KEY)
    for pid, env in processes:
        assert env["OPENAI_API_KEY"] == token, pid
        assert env["OPENAI_BASE_URL"] == f"{server.url}/llm/openai/v1", pid
        assert env["ANTHROPIC_AUTH_TOKEN"] == token, pid
        assert env["ANTHROPIC_BASE_URL"] == f"{server.url}/llm/anthropic", pid
        text = json.dumps(env)
        assert PROVIDER_KEY not in text and ANTHROPIC_KEY not in text, pid
    assert not [r for r in fake_llm.requests if token in json.dumps(r.headers)]
    assert holding([home, workspace], PROVIDER_KEY) == []
    assert holding([home, workspace], token) == []  # the agents read it from the environment
    # nothing the server keeps holds either: the ledger stores the token's hash only
    assert holding([data], PROVIDER_KEY) == []
    assert holding([data], token) == []

    # the requests are metered: in GET /usage and on the session item (the agent may
    # still be sending one: compare once both answers agree)
    def metered() -> Any:
        report = server.http.get(
            "/api/v1/sandbox/usage", params={"groupBy": "sandbox"}, headers=server.auth()
        ).json()
        item = server.http.get(f"{SESSIONS}/box", headers=server.auth()).json()
        spent = item["usage30d"]
        totals = report["totals"]
        agree = (spent["inputTokens"], spent["outputTokens"]) == (
            totals["inputTokens"],
            totals["outputTokens"],
        )
        return report if totals["requests"] >= 1 and agree else None

    report = server.wait("usage", metered)
    assert report["totals"]["inputTokens"] > 0 and report["totals"]["outputTokens"] > 0
    assert [g["key"] for g in report["groups"]] == ["box"]
    assert 1 <= report["totals"]["requests"] <= len(fake_llm.completions())

    # the token works until the sandbox is deleted, then the gateway refuses it
    call = {"model": MODEL, "messages": [{"role": "user", "content": "ping-after"}]}
    bearer = {"Authorization": f"Bearer {token}"}
    before = server.http.post("/llm/openai/v1/chat/completions", json=call, headers=bearer)
    assert before.status_code == 200, before.text
    deleted = server.http.delete(f"{SESSIONS}/box", headers=server.auth())
    assert deleted.status_code in (200, 202, 204), deleted.text
    server.wait(
        "deletion",
        lambda: server.http.get(f"{SESSIONS}/box", headers=server.auth()).status_code == 404,
    )
    refused = server.http.post("/llm/openai/v1/chat/completions", json=call, headers=bearer)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "invalid_api_key"
    server.wait("the sandbox's processes to end", lambda: not sandbox_processes(home))

    out, err = capfd.readouterr()
    assert PROVIDER_KEY not in out + err and ANTHROPIC_KEY not in out + err
    assert token not in out + err
