"""Kubernetes-mode terminals: the control plane (`sandbox api` composition) proxies to a
real standalone terminal server, as it does to each sandbox's pty-server pod."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import websockets

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api
from openova_sandbox.api.terminal_edge.standalone import build_standalone_app
from openova_sandbox.auth.authenticator import build_authenticator
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.domain.model import SandboxStatus
from openova_sandbox.domain.terminal_wire import SUBPROTOCOL_V2, unpack_frame
from openova_sandbox.store.sql import SqlStore
from openova_sandbox.testing.server import free_port, serve_in_thread

SESSIONS = "/api/v1/sandbox/sessions"


class Cluster:
    """A control plane plus one sandbox's terminal server, sharing a SQLite store file
    that the test edits the way the operator would (status, phases)."""

    def __init__(self, tmp_path: Path, pty_port: int) -> None:
        agents = tmp_path / "agents.json"
        agents.write_text(
            json.dumps([{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"]}])
        )
        (tmp_path / "work").mkdir(exist_ok=True)
        self.settings = load_settings(
            data_dir=tmp_path / "data",
            agents_path=str(agents),
            kube_pty_url_template=f"http://127.0.0.1:{pty_port}",
            pty_sandbox_id="box",
            pty_namespace="acme",
            pty_owner_email="dev@acme.com",
            pty_org_id="acme",
            pty_default_agent="aider",
            pty_workdir=str(tmp_path / "work"),
        )
        self.issuer = EmbeddedIssuer.load_or_create(tmp_path / "data")
        self.db = self.settings.effective_database_url

    def token(self, sub="u-1", email="dev@acme.com", org="acme") -> str:
        return self.issuer.mint(sub=sub, email=email, org=org)

    def edit(self, change) -> None:
        async def run():
            store = SqlStore(self.db)
            await store.start()
            try:
                current = await store.get("acme", "box")
                await change(store, current)
            finally:
                await store.close()

        asyncio.run(run())

    def set_phase(self, phase: str, namespace: str = "sandbox-dev-at-acme-com") -> None:
        async def change(store, current):
            status = replace(current.status, phase=phase, extra={"workspaceNamespace": namespace})
            await store.update_status(current.with_status(status))

        self.edit(change)


@pytest.fixture
def cluster(tmp_path):
    pty_port = free_port()
    c = Cluster(tmp_path, pty_port)
    pty_app = build_standalone_app(
        c.settings, authenticate=build_authenticator(c.settings, issuer=c.issuer).authenticate
    )
    with (
        serve_in_thread(pty_app, port=pty_port),
        serve_in_thread(create_app(build_api(c.settings))) as api,
    ):
        c.url = api.url
        c.ws = api.ws_url
        c.http = httpx.Client(base_url=api.url, timeout=10)
        yield c
        c.http.close()


async def read_until(ws, needle: bytes, timeout=10.0) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            seen += await ws.recv()
    return seen


def test_attach_resize_and_extra_terminals_go_through_to_the_pod(cluster):
    h = {"Authorization": f"Bearer {cluster.token()}"}
    assert (
        cluster.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"}).status_code
        == 201
    )
    cluster.set_phase("Ready")
    url = f"{cluster.ws}{SESSIONS}/box/attach?access_token={cluster.token()}"

    async def scenario():
        async with websockets.connect(url) as ws:
            await ws.recv()  # replay
            await ws.send("echo via-proxy-$((5*5))\n")
            await read_until(ws, b"via-proxy-25")
            resized = cluster.http.post(
                f"{SESSIONS}/box/resize", headers=h, json={"rows": 30, "cols": 99}
            )
            assert resized.status_code == 204
            await ws.send("stty size\n")
            await read_until(ws, b"30 99")

    asyncio.run(scenario())
    extra = cluster.http.post(
        f"{SESSIONS}/box/terminals", headers=h, json={"agent": "sovereign-shell"}
    )
    assert extra.status_code == 201, extra.text
    tid = extra.json()["id"]
    listed = cluster.http.get(f"{SESSIONS}/box/terminals", headers=h).json()["terminals"]
    assert {t["id"] for t in listed} == {"box", tid}
    assert cluster.http.delete(f"{SESSIONS}/box/terminals/{tid}", headers=h).status_code == 204
    assert cluster.http.delete(f"{SESSIONS}/box/terminals/{tid}", headers=h).status_code == 404


def test_extra_terminals_keep_the_agents_slot_in_the_pod_too(cluster):
    """The pod counts every session against its limit; the control plane keeps one of
    them for the agent (default quota: 3 sessions, so 2 extra terminals)."""
    h = {"Authorization": f"Bearer {cluster.token()}"}
    cluster.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    cluster.set_phase("Ready")
    opened = [
        cluster.http.post(f"{SESSIONS}/box/terminals", headers=h, json={"agent": "aider"})
        for _ in range(3)
    ]
    assert [o.status_code for o in opened] == [201, 201, 429]
    assert opened[2].json()["error"] == "session-limit"
    assert "kept for the agent" in opened[2].json()["detail"]
    url = f"{cluster.ws}{SESSIONS}/box/attach?access_token={cluster.token()}"

    async def agent_starts():
        async with websockets.connect(url) as ws:
            await ws.recv()  # the replay: the primary agent runs
            await ws.send("echo agent-$((6*7))\n")
            await read_until(ws, b"agent-42")

    asyncio.run(agent_starts())


def test_attach_wakes_a_suspended_sandbox(cluster):
    h = {"Authorization": f"Bearer {cluster.token()}"}
    cluster.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    cluster.set_phase("Suspended")
    url = f"{cluster.ws}{SESSIONS}/box/attach?access_token={cluster.token()}"
    result: dict[str, bytes] = {}

    def attach():
        async def go():
            async with websockets.connect(url) as ws:
                result["replay"] = await asyncio.wait_for(ws.recv(), 20)

        asyncio.run(go())

    thread = threading.Thread(target=attach)
    thread.start()
    woken = None
    deadline = time.monotonic() + 10
    while woken is None and time.monotonic() < deadline:
        seen: dict[str, str] = {}

        async def read(store, current, seen=seen):
            seen.update(current.metadata.annotations)

        cluster.edit(read)
        woken = seen.get("openova.io/wake-requested")
        time.sleep(0.1)
    assert woken, "attach did not ask the operator to wake the sandbox"
    cluster.set_phase("Ready")  # what the operator does once the pod is ready again
    thread.join(timeout=30)
    assert "replay" in result


def test_unreachable_terminal_server(tmp_path):
    c = Cluster(tmp_path, free_port())  # nothing listens there
    with serve_in_thread(create_app(build_api(c.settings))) as api:
        h = {"Authorization": f"Bearer {c.token()}"}
        httpx.post(f"{api.url}{SESSIONS}", headers=h, json={"agent": "aider", "name": "box"})
        c.set_phase("Ready")
        resp = httpx.post(f"{api.url}{SESSIONS}/box/resize", headers=h, json={"rows": 5, "cols": 5})
        assert resp.status_code == 503
        assert resp.json()["error"] == "sandbox-pty-unavailable"

        async def attach():
            async with websockets.connect(
                f"{api.ws_url}{SESSIONS}/box/attach?access_token={c.token()}"
            ) as ws:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                return ws.close_code

        assert asyncio.run(attach()) == 1011


def test_a_sandbox_without_a_workspace_namespace_is_not_ready(cluster):
    h = {"Authorization": f"Bearer {cluster.token()}"}
    cluster.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})

    async def change(store, current):
        await store.update_status(current.with_status(SandboxStatus(phase="Ready")))

    cluster.edit(change)
    resp = cluster.http.post(f"{SESSIONS}/box/resize", headers=h, json={"rows": 5, "cols": 5})
    assert resp.status_code == 503
    assert resp.json()["error"] == "sandbox-not-ready"


def test_sandbox_v2_and_since_go_through_to_the_pod(cluster):
    """The control plane accepts sandbox.v2 and passes it, and ``since``, to the pod's
    terminal server, which speaks the protocol: a reconnect resumes at the offset."""
    h = {"Authorization": f"Bearer {cluster.token()}"}
    cluster.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    cluster.set_phase("Ready")
    url = f"{cluster.ws}{SESSIONS}/box/attach?access_token={cluster.token()}"

    async def frames_until(ws, needle: bytes) -> tuple[bytes, int]:
        seen, end = b"", 0
        async with asyncio.timeout(10):
            while needle not in seen:
                message = await ws.recv()
                if isinstance(message, bytes):
                    start, data = unpack_frame(message)
                    seen, end = seen + data, start + len(data)
        return seen, end

    async def scenario():
        async with websockets.connect(url, subprotocols=[SUBPROTOCOL_V2]) as ws:
            assert ws.subprotocol == SUBPROTOCOL_V2
            hello = json.loads(await ws.recv())
            assert (hello["type"], hello["mode"]) == ("hello", "write")
            assert json.loads(await ws.recv())["type"] == "snapshot"
            await ws.send(b"echo before-$((3*3))\n")
            _, since = await frames_until(ws, b"before-9")
        async with websockets.connect(url) as raw:  # meanwhile, on another viewer
            await raw.send("echo missed-$((4*2))\n")
            await read_until(raw, b"missed-8")
        resume = f"{url}&since={since}"
        async with websockets.connect(resume, subprotocols=[SUBPROTOCOL_V2]) as again:
            assert json.loads(await again.recv())["type"] == "hello"
            assert json.loads(await again.recv()) == {"type": "resume", "seq": since}
            start, data = unpack_frame(await again.recv())
            assert start == since
            assert b"missed-8" in data and b"before-9" not in data

    asyncio.run(scenario())


def test_share_links_are_refused_plainly_in_kubernetes_mode(cluster):
    """Without SANDBOX_SHARE_GRANT_SECRET the control plane cannot vouch for a share's
    viewer to the pod (test_share_grants.py covers it with one): a link says what is
    missing instead of a bare refusal."""
    h = {"Authorization": f"Bearer {cluster.token()}"}
    cluster.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    cluster.set_phase("Ready")
    made = cluster.http.post(f"{SESSIONS}/box/shares", headers=h, json={"mode": "read"})
    assert made.status_code == 201, made.text
    member = cluster.token(sub="u-2", email="member@acme.com")
    url = f"{cluster.ws}{SESSIONS}/box/attach?access_token={member}&share={made.json()['token']}"

    async def scenario():
        async with websockets.connect(url) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1011
            assert "SANDBOX_SHARE_GRANT_SECRET" in (ws.close_reason or "")

    asyncio.run(scenario())
