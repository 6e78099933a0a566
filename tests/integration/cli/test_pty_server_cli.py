"""`sandbox pty-server`: the per-sandbox terminal server as Kubernetes runs it, from env."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from openova_sandbox.auth.cookie import sign_cookie
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.testing.server import free_port

SANDBOX = str(Path(sys.executable).parent / "sandbox")


@pytest.fixture
def pty_server(tmp_path):
    issuer = EmbeddedIssuer.load_or_create(tmp_path / "data")
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"]}]))
    (tmp_path / "work").mkdir()
    port = free_port()
    env = {
        **os.environ,
        "SANDBOX_DATA_DIR": str(tmp_path / "data"),
        "SANDBOX_ID": "box",
        "SANDBOX_NAMESPACE": "acme",  # the Sandbox's own namespace, as the operator sets it
        "SANDBOX_OWNER_EMAIL": "dev@acme.com",
        "SANDBOX_ORG_ID": "acme",
        "SANDBOX_DEFAULT_AGENT": "aider",
        "SANDBOX_SESSION_LIMIT": "2",
        "SANDBOX_WORKDIR": str(tmp_path / "work"),
        "SANDBOX_COOKIE_SECRET": "cookie-secret-for-tests",
        "SANDBOX_PROBE_TOKEN": "probe-secret-for-tests",
        "OPENOVA_SANDBOX_AGENTS_PATH": str(agents),
    }
    proc = subprocess.Popen(
        [SANDBOX, "pty-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    yield url, issuer
    proc.terminate()
    proc.wait(timeout=20)


def test_requires_a_sandbox_id(tmp_path):
    out = subprocess.run(
        [SANDBOX, "pty-server", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "SANDBOX_ID"},
    )
    assert out.returncode == 1
    assert "SANDBOX_ID is required" in out.stderr


def test_owner_attaches_with_a_signed_cookie_and_strangers_are_refused(pty_server):
    url, issuer = pty_server
    owner = issuer.mint(sub="u1", email="Dev@Acme.com", org="acme")
    stranger = issuer.mint(sub="u2", email="eve@acme.com", org="acme")
    created = httpx.post(f"{url}/sessions", json={}, headers={"Authorization": f"Bearer {owner}"})
    assert created.status_code == 201
    assert len(created.json()["id"]) == 24
    denied = httpx.get(f"{url}/sessions", headers={"Authorization": f"Bearer {stranger}"})
    assert denied.status_code == 403

    ws = url.replace("http://", "ws://")
    cookie = {"Cookie": f"catalyst_session={sign_cookie(owner, 'cookie-secret-for-tests')}"}

    async def scenario():
        async with websockets.connect(f"{ws}/sessions/box/attach", additional_headers=cookie) as c:
            await c.recv()  # replay
            await c.send("echo pty-$((6*7))\n")
            seen = b""
            async with asyncio.timeout(10):
                while b"pty-42" not in seen:
                    seen += await c.recv()
        forged = {"Cookie": f"catalyst_session={owner}.AAAA"}
        async with websockets.connect(f"{ws}/sessions/box/attach", additional_headers=forged) as c:
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(15):
                    async for _ in c:  # the server may explain before it closes
                        pass
            assert c.close_code == 1008

    asyncio.run(scenario())


def test_the_probe_token_opens_idle_and_nothing_else(pty_server):
    url, issuer = pty_server
    probe = {"Authorization": "Bearer probe-secret-for-tests"}
    idle = httpx.get(f"{url}/idle", headers=probe)
    assert idle.status_code == 200
    assert set(idle.json()) == {
        "lastActivityAt", "activeSessions", "attachedViewers", "agentBusy", "activity"
    }  # fmt: skip
    assert httpx.get(f"{url}/idle").status_code == 401
    assert httpx.get(f"{url}/idle", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/sessions", headers=probe).status_code == 401
    assert httpx.post(f"{url}/sessions", headers=probe, json={}).status_code == 401
    owner = issuer.mint(sub="u1", email="dev@acme.com", org="acme")
    assert httpx.get(f"{url}/idle", headers={"Authorization": f"Bearer {owner}"}).status_code == 200


def test_help_and_usage_errors_are_the_full_clis(tmp_path):
    """The console script runs `sandbox pty-server` without building the typer CLI, but
    what it cannot read for certain goes to the CLI: help and usage errors unchanged."""
    helped = subprocess.run(
        [SANDBOX, "pty-server", "--help"], capture_output=True, text=True, timeout=30
    )
    assert helped.returncode == 0
    assert "Usage: sandbox pty-server [OPTIONS]" in helped.stdout
    assert "--host" in helped.stdout and "--port" in helped.stdout
    for bad in (["--port", "0"], ["--port=abc"], ["--nope"], ["--port"]):
        refused = subprocess.run(
            [SANDBOX, "pty-server", *bad], capture_output=True, text=True, timeout=30
        )
        assert refused.returncode == 2, (bad, refused.stderr)
        assert "Error" in refused.stderr  # typer's own message


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_flags_in_both_spellings_reach_the_server(tmp_path, loop):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    port = free_port()
    env.update(
        SANDBOX_ID="box", SANDBOX_DATA_DIR=str(tmp_path / "data"), SANDBOX_PTY_EVENT_LOOP=loop
    )
    EmbeddedIssuer.load_or_create(tmp_path / "data")
    proc = subprocess.Popen(
        [SANDBOX, "pty-server", "--host=127.0.0.1", f"--port={port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0  # SIGTERM: a clean shutdown
