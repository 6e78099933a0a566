"""A real embedded server (``sandbox serve``'s app under uvicorn on the test's own loop,
so the test can read its store and issue tokens directly) and the official MCP client
against its ``/mcp``, for the MCP tests and bench."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.api.deps import AppDeps
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.domain.errors import Conflict
from openova_sandbox.domain.model import Sandbox
from openova_sandbox.serving import UVICORN_OPTIONS, Server, shutdown_hooks
from openova_sandbox.testing.server import free_port
from support.fake_agents import write_stand_ins

SESSIONS = "/api/v1/sandbox/sessions"


@dataclass(frozen=True)
class Person:
    sub: str
    email: str
    org: str


@dataclass
class McpWorld:
    deps: AppDeps
    url: str
    issuer: EmbeddedIssuer
    http: httpx.AsyncClient
    server: Any = None
    task: Any = None

    async def stop(self, timeout: float = 30) -> None:
        """Stop the server as SIGTERM does (shutdown hooks first) and wait for it."""
        self.server.should_exit = True
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    def token(self, who: Person) -> str:
        return self.issuer.mint(sub=who.sub, email=who.email, org=who.org)

    def auth(self, who: Person) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(who)}"}

    async def create(self, who: Person, agent: str = "shell", **body: Any) -> Sandbox:
        """A sandbox of ``who`` made through the API, as stored (uid and all)."""
        made = await self.http.post(SESSIONS, json={"agent": agent, **body}, headers=self.auth(who))
        assert made.status_code == 201, made.text
        return await self.deps.store.get(who.org, made.json()["id"])

    async def ready(self, who: Person, name: str) -> dict[str, Any]:
        async with asyncio.timeout(20):
            while True:
                got = await self.http.get(f"{SESSIONS}/{name}", headers=self.auth(who))
                item: dict[str, Any] = got.json()
                if item.get("phase") in ("Ready", "Failed"):
                    assert item["phase"] == "Ready", item
                    return item
                await asyncio.sleep(0.02)

    async def gone(self, who: Person, name: str) -> None:
        async with asyncio.timeout(20):
            while (
                await self.http.get(f"{SESSIONS}/{name}", headers=self.auth(who))
            ).status_code != 404:
                await asyncio.sleep(0.02)

    def mcp_token(self, sandbox: Sandbox) -> str:
        token: str = self.deps.mcp_tokens.issue(sandbox)
        return token

    async def set_capabilities(self, sandbox: Sandbox, capabilities: list[str]) -> Sandbox:
        """The sandbox's ``spec.capabilities`` written as any client of the store writes
        a spec: read it, change it, and on a Conflict (the controller's status writes
        move the version meanwhile) read it again and retry."""
        for _ in range(50):
            current = await self.deps.store.get(sandbox.namespace, sandbox.name)
            narrowed = replace(
                current, spec=replace(current.spec, extra={"capabilities": capabilities})
            )
            try:
                stored = await self.deps.store.update(narrowed)
            except Conflict:
                continue
            assert stored is not None
            return stored
        raise AssertionError(f"the spec of {sandbox.name} could not be written in 50 tries")

    @contextlib.asynccontextmanager
    async def client(self, token: str, **options: Any) -> AsyncIterator[Client]:
        """The official MCP client (streamable HTTP) with ``token`` as its bearer."""
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as h,
            Client(streamable_http_client(f"{self.url}/mcp", http_client=h), **options) as c,
        ):
            yield c


@contextlib.asynccontextmanager
async def mcp_world(tmp_path: Path, **overrides: Any) -> AsyncIterator[McpWorld]:
    """The server runs until the block ends; ``world.stop()`` stops it earlier."""
    agents = write_stand_ins(tmp_path / "agents.json")
    settings = load_settings(data_dir=tmp_path / "data", agents_path=str(agents), **overrides)
    deps = build_embedded(settings)
    app = create_app(deps)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), lifespan="on", **UVICORN_OPTIONS
    )
    server = Server(config, on_shutdown=shutdown_hooks(app))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{config.port}"
    http = httpx.AsyncClient(base_url=url, timeout=15)
    try:
        yield McpWorld(deps, url, EmbeddedIssuer.load(tmp_path / "data"), http, server, task)
    finally:
        await http.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 30)
