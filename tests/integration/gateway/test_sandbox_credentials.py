"""A sandbox's terminals hold its gateway token, never a provider key (the fast half of
test_gateway_agents.py: the Shell instead of a real agent).

The real embedded server (SQLite store and ledger) under uvicorn, its provider the fake
model server; the server holds the provider keys in its settings and in its own process
environment. The Shell is started over the attach WebSocket and its process read from
``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.testing.server import serve_in_thread
from support.fake_llm import FakeLLM
from support.processes import environ

SESSIONS = "/api/v1/sandbox/sessions"
PROVIDER_KEY = "sk-provider-SECRET-" + secrets.token_hex(8)
ANTHROPIC_KEY = "sk-ant-provider-SECRET-" + secrets.token_hex(8)


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as llm:
        yield llm


@contextlib.contextmanager
def running(tmp_path: Path, llm: FakeLLM) -> Iterator[tuple[str, httpx.Client, dict[str, str]]]:
    (tmp_path / "agents.json").write_text("[]")
    settings = load_settings(
        data_dir=tmp_path / "data",
        store="sql",
        agents_path=str(tmp_path / "agents.json"),
        openai_base_url=llm.base_url,
        openai_api_key=PROVIDER_KEY,
        anthropic_api_key=ANTHROPIC_KEY,
    )
    with serve_in_thread(create_app(build_embedded(settings))) as server:
        token = EmbeddedIssuer.load(tmp_path / "data").mint(
            sub="user-sub-abcdef12",
            email="dev@acme.com",
            org="acme",
            roles=(),
            ttl=timedelta(minutes=5),
            extra={},
        )
        with httpx.Client(base_url=server.url, timeout=20) as http:
            yield server.url, http, {"Authorization": f"Bearer {token}"}


def shell_env(url: str, auth: dict[str, str], home: Path) -> dict[str, str]:
    """Attach to the Shell (which starts it) and read its process's environment."""
    token = auth["Authorization"].split()[1]
    ws = url.replace("http://", "ws://") + f"{SESSIONS}/sh/attach?access_token={token}"

    async def attach() -> dict[str, str]:
        async with websockets.connect(ws) as socket:
            await asyncio.wait_for(socket.recv(), 10)
            deadline = time.monotonic() + 10
            while True:
                for pid in Path("/proc").glob("[0-9]*"):
                    env = environ(int(pid.name))
                    if env.get("HOME") == str(home):
                        return env
                assert time.monotonic() < deadline, "the Shell's process was not found"
                await asyncio.sleep(0.05)

    return asyncio.run(attach())


def create_shell(http: httpx.Client, auth: dict[str, str]) -> None:
    if http.get(f"{SESSIONS}/sh", headers=auth).status_code == 404:
        created = http.post(SESSIONS, headers=auth, json={"agent": "shell", "name": "sh"})
        assert created.status_code == 201, created.text
    deadline = time.monotonic() + 20
    while http.get(f"{SESSIONS}/sh", headers=auth).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def models(http: httpx.Client, token: str) -> Any:
    return http.get("/llm/openai/v1/models", headers={"Authorization": f"Bearer {token}"})


def test_the_shell_gets_the_sandbox_token_and_a_restart_replaces_it(
    tmp_path: Path, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PROVIDER_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    home = tmp_path / "data" / "homes" / "acme" / "sh"
    with running(tmp_path, fake_llm) as (url, http, auth):
        create_shell(http, auth)
        env = shell_env(url, auth, home)
        token = env["OPENAI_API_KEY"]
        assert env["OPENAI_BASE_URL"] == f"{url}/llm/openai/v1"
        assert env["ANTHROPIC_BASE_URL"] == f"{url}/llm/anthropic"
        assert env["LLM_GATEWAY_URL"] == f"{url}/llm/anthropic"
        assert env["ANTHROPIC_AUTH_TOKEN"] == token
        assert "ANTHROPIC_API_KEY" not in env
        assert PROVIDER_KEY not in json.dumps(env) and ANTHROPIC_KEY not in json.dumps(env)
        # what a user can do by hand in the Shell: the gateway takes the token
        assert models(http, token).status_code == 200
        assert fake_llm.requests[-1].authorization == f"Bearer {PROVIDER_KEY}"
    # the server stopped: what it handed out stops working; after a restart the
    # sandbox's terminals get a new token
    with running(tmp_path, fake_llm) as (url, http, auth):
        assert models(http, token).status_code == 401
        create_shell(http, auth)
        again = shell_env(url, auth, home)["OPENAI_API_KEY"]
        assert again != token
        assert models(http, again).status_code == 200
