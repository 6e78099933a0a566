"""The real embedded app (memory store, in-memory ledger) under uvicorn, its gateway
pointed at a fake provider (``fake_upstream.py``) by an operator config file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.config import load_settings
from openova_sandbox.gateway.upstream import Upstream
from openova_sandbox.services.gateway import GatewayService
from openova_sandbox.services.gateway_ledger import GatewayIdentity, MemoryLedger
from openova_sandbox.testing.server import RunningServer, free_port, serve_in_thread
from support.fake_agents import write_stand_ins

from .fake_upstream import FakeUpstream, running_upstream

OPENAI_KEY = "sk-provider-secret-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-provider-secret-0123456789"
IDENTITY = GatewayIdentity(
    sandbox="sb-one", namespace="acme-ns", owner_sub="sub-1", owner_email="dev@acme.com", org="acme"
)
# USD per million tokens
GPT_PRICE = {"input": 2, "output": 8, "cacheRead": 0.5}
CLAUDE_PRICE = {"input": 3, "output": 15, "cacheRead": 0.3, "cacheWrite": 3.75}


def llm_config(upstream: FakeUpstream, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    (tmp_path / "openai.key").write_text(OPENAI_KEY + "\n")
    (tmp_path / "anthropic.key").write_text(ANTHROPIC_KEY)
    config: dict[str, Any] = {
        "providers": {
            "fake-openai": {
                "kind": "openai",
                "baseUrl": upstream.origin + "/v1",
                "apiKeyFile": str(tmp_path / "openai.key"),
                "passthrough": True,
            },
            "fake-anthropic": {
                "kind": "anthropic",
                "baseUrl": upstream.origin,
                "apiKeyFile": str(tmp_path / "anthropic.key"),
            },
            "down": {"kind": "openai", "baseUrl": f"http://127.0.0.1:{free_port()}/v1"},
        },
        "models": {
            "gpt-test": {
                "provider": "fake-openai",
                "model": "up-gpt",
                "price": GPT_PRICE,
                "maxOutputTokens": 1000,
            },
            "claude-test": {
                "provider": "fake-anthropic",
                "model": "up-claude",
                "price": CLAUDE_PRICE,
            },
            "claude-hold": {"provider": "fake-anthropic", "model": "hold", "price": CLAUDE_PRICE},
            "claude-fail": {"provider": "fake-anthropic", "model": "fail-500"},
            "gone": {"provider": "down"},
        },
        "timeouts": {"connect": 2, "read": 1.5},
        "maxRequestBytes": 200_000,
    }
    config.update(overrides)
    return config


class Gateway:
    def __init__(self, server: RunningServer, upstream: FakeUpstream, service: GatewayService):
        self.server = server
        self.url = server.url
        self.upstream = upstream
        self.service = service
        assert isinstance(service.ledger, MemoryLedger)
        self.ledger: MemoryLedger = service.ledger
        self.http = httpx.Client(base_url=server.url, timeout=20)
        self.token = self.issue(IDENTITY)

    def issue(self, identity: GatewayIdentity) -> str:
        return asyncio.run(self.ledger.issue_token(identity))

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def openai(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def anthropic(self, token: str | None = None) -> dict[str, str]:
        return {"x-api-key": token or self.token, "anthropic-version": "2023-06-01"}

    def wait_records(self, count: int, timeout: float = 10.0) -> list[Any]:
        import time

        deadline = time.monotonic() + timeout
        while len(self.ledger.records) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.ledger.records)} records, wanted {count}"
            )
            time.sleep(0.02)
        return list(self.ledger.records)


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    with contextlib.ExitStack() as stack:

        def start(*, via_httpx: bool = False, **config_overrides: Any) -> Gateway:
            upstream = stack.enter_context(running_upstream())
            config_file = tmp_path / "llm.yaml"
            config_file.write_text(
                yaml.safe_dump(llm_config(upstream, tmp_path, **config_overrides))
            )
            agents = write_stand_ins(tmp_path / "agents.json")
            settings = load_settings(
                data_dir=tmp_path / "data",
                agents_path=str(agents),
                store="memory",
                llm_config=str(config_file),
            )
            deps = build_embedded(settings)
            if via_httpx:  # the path of upstreams behind a proxy
                deps.gateway.upstream = Upstream(deps.gateway.config.timeouts, via_httpx=True)
            server = stack.enter_context(serve_in_thread(create_app(deps)))
            gateway = Gateway(server, upstream, deps.gateway)
            stack.callback(gateway.http.close)
            return gateway

        yield start


@pytest.fixture
def gw(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()
