"""``sandbox mcp`` as real processes: ``--stdio`` (the official client starts it as a
command and talks to a running server through it) and ``--http`` (the MCP server alone,
as in Kubernetes mode, on a SQL store it shares with whoever writes the sandboxes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.domain.model import ANNOTATION_SUB, ObjectMeta, Sandbox, SandboxSpec
from openova_sandbox.services.mcp_tokens import McpTokens
from openova_sandbox.store.sql import SqlStore
from openova_sandbox.testing.server import free_port
from support.mcp_world import McpWorld, Person, mcp_world

SANDBOX = str(Path(sys.executable).parent / "sandbox")
ADA = Person("sub-ada", "ada@acme.com", "acme")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[McpWorld]:
    async with mcp_world(tmp_path, isolation="none") as made:
        yield made


def stdio(world: McpWorld, token: str | None) -> StdioServerParameters:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    if token is not None:
        env["SANDBOX_MCP_TOKEN"] = token
    return StdioServerParameters(
        command=SANDBOX, args=["mcp", "--stdio", "--url", f"{world.url}/mcp"], env=env
    )


async def test_stdio_bridges_a_local_client_to_the_servers_mcp(world: McpWorld) -> None:
    mine = await world.create(ADA)
    token = world.mcp_token(mine)
    async with Client(stdio(world, token)) as client:
        names = {t.title for t in (await client.list_tools()).tools}
        assert {"session.whoami", "sandbox.list", "usage.get"} <= names
        whoami = await client.call_tool("session.whoami", {})
        assert not whoami.is_error
        assert whoami.structured_content["sandbox"]["id"] == mine.name
        bad = await client.call_tool("sandbox.create", {"agent": 7})
        assert bad.is_error and bad.structured_content["error"] == "invalid-arguments"
        # the server checks the token on every request: deleting the sandbox ends it
        gone = await world.http.delete(
            f"/api/v1/sandbox/sessions/{mine.name}", headers=world.auth(ADA)
        )
        assert gone.status_code == 204
        await world.gone(ADA, mine.name)
        with pytest.raises(MCPError, match="no longer exists"):
            await client.call_tool("session.whoami", {})


def test_stdio_without_a_token_says_what_is_missing(tmp_path: Path) -> None:
    done = subprocess.run(
        [SANDBOX, "mcp", "--stdio"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert "SANDBOX_MCP_TOKEN is not set" in done.stderr
    both = subprocess.run(
        [SANDBOX, "mcp"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert both.returncode == 2
    assert "--http" in both.stderr and "--stdio" in both.stderr


@dataclass
class McpProcess:
    url: str
    proc: subprocess.Popen[bytes]
    tokens: McpTokens
    database: str


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def mcp_process(tmp_path: Path) -> Iterator[McpProcess]:
    pem = _pem()
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    port = free_port()
    env = {
        **os.environ,
        "SANDBOX_DATA_DIR": str(tmp_path / "data"),
        "SANDBOX_STORE": "sql",
        "SANDBOX_DATABASE_URL": database,
        "SANDBOX_ISSUER_KEY": pem,
        "SANDBOX_COOKIE_SECRET": "cookie-secret-for-tests",
        "SANDBOX_MCP_DEFAULT_PLAN": "sandbox-free",
    }
    proc = subprocess.Popen(
        [SANDBOX, "mcp", "--http", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "sandbox mcp --http did not get ready"
        time.sleep(0.05)
    try:
        yield McpProcess(url, proc, McpTokens(EmbeddedIssuer.from_pem(pem), None), database)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)


def _sandbox(name: str, who: Person) -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(name=name, namespace=who.org, annotations={ANNOTATION_SUB: who.sub}),
        spec=SandboxSpec(owner_email=who.email, org_slug=who.org),
    )


async def test_http_serves_mcp_alone_on_the_shared_store(mcp_process: McpProcess) -> None:
    store = SqlStore(mcp_process.database)
    await store.start()
    try:
        mine = await store.create(_sandbox("ada-box", ADA))
        await store.create(_sandbox("bob-box", Person("sub-bob", "bob@acme.com", "acme")))
        token = mcp_process.tokens.issue(mine)
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(f"{mcp_process.url}/mcp", http_client=http)) as client,
        ):
            names = {t.title for t in (await client.list_tools()).tools}
            # the default plan here is sandbox-free; terminals live in the pods, listed
            # through each pod's terminal server for the sandbox's own token (docs/mcp.md)
            assert names == {
                "session.whoami",
                "session.info",
                "sandbox.list",
                "sandbox.terminals",
                "usage.get",
            }
            # written by another process: listed once this one's resource cache has it
            async with asyncio.timeout(10):
                while True:
                    listed = await client.call_tool("sandbox.list", {})
                    ids = [s["id"] for s in listed.structured_content["sandboxes"]]
                    if ids:
                        break
                    await asyncio.sleep(0.02)
            assert ids == ["ada-box"]  # never Bob's
            whoami = await client.call_tool("session.whoami", {})
            assert whoami.structured_content["plan"] == "sandbox-free"

        # another process deletes the sandbox: this one refuses its token from then on
        await store.delete("acme", "ada-box")
        async with asyncio.timeout(10):
            while True:
                refused = await asyncio.to_thread(
                    httpx.post,
                    f"{mcp_process.url}/mcp",
                    headers={**headers, "Accept": "application/json, text/event-stream"},
                    json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                )
                if refused.status_code == 401:
                    break
                await asyncio.sleep(0.02)  # the resource cache follows the store's watch
        assert "no longer exists" in refused.json()["error"]["message"]
    finally:
        await store.close()

    # SIGTERM: gone within 10 s
    mcp_process.proc.send_signal(signal.SIGTERM)
    # (uvicorn re-raises the signal once it has shut down gracefully)
    assert mcp_process.proc.wait(timeout=10) in (0, -signal.SIGTERM)


def test_http_refuses_to_start_without_the_shared_issuer_key(tmp_path: Path) -> None:
    done = subprocess.run(
        [SANDBOX, "mcp", "--http", "--port", str(free_port())],
        env={**os.environ, "SANDBOX_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "SANDBOX_ISSUER_KEY" in done.stderr
