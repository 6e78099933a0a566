"""Attach before Ready waits, then gives up with 1013; a Failed sandbox explains itself."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import pytest
import websockets

from openova_sandbox.api.routes import terminals as terminal_routes
from openova_sandbox.domain.principal import Principal
from openova_sandbox.services.sessions import CreateRequest

SESSIONS = "/api/v1/sandbox/sessions"


@pytest.fixture
def silent_git():
    """A TCP server that accepts and never answers: a clone from it hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


async def close_code(url: str) -> tuple[int | None, bytes]:
    text = b""
    async with websockets.connect(url) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(20):
                async for frame in ws:
                    text += frame if isinstance(frame, bytes) else frame.encode()
        return ws.close_code, text


def test_attach_gives_up_with_1013_while_provisioning(make_api, silent_git, monkeypatch):
    monkeypatch.setattr(terminal_routes, "READY_WAIT", 1.5)
    api = make_api(store="memory", git_base_url=silent_git)
    h = api.auth()
    created = api.http.post(
        SESSIONS, headers=h, json={"agent": "aider", "name": "slow", "repo": "acme/site"}
    )
    assert created.status_code == 201
    url = f"{api.server.ws_url}{SESSIONS}/slow/attach?access_token={api.token()}"
    code, _ = asyncio.run(close_code(url))
    assert code == 1013
    assert api.http.get(f"{SESSIONS}/slow", headers=h).json()["phase"] in (
        "Pending",
        "Provisioning",
    )


def test_attach_to_a_failed_sandbox_writes_the_reason(make_api):
    # create refuses a repo of another org (cross-org-repo); an object written to the
    # store by something else still meets the controller's CrossOrgRepo guard
    api = make_api(store="sql", git_base_url="http://127.0.0.1:9")
    h = api.auth()
    caller = Principal(sub="user-sub-abcdef12", email="dev@acme.com", org="acme")
    sandbox = api.deps.sessions.build(
        caller, CreateRequest(agent="aider", name="cross", repo="other/site")
    )

    api.on_own_store(lambda store: store.create(sandbox))
    url = f"{api.server.ws_url}{SESSIONS}/cross/attach?access_token={api.token()}"
    code, text = asyncio.run(close_code(url))
    assert code == 1011
    assert b"provisioning failed" in text
    item = api.http.get(f"{SESSIONS}/cross", headers=h).json()
    assert item["status"] == "failed"
    assert any(c.get("reason") == "CrossOrgRepo" for c in item["conditions"])


def test_the_offered_agents_can_be_narrowed_by_configuration(make_api):
    api = make_api(store="memory", agents=("claude-code", "aider", "no-such-agent"))
    listed = api.http.get("/api/v1/sandbox/agents", headers=api.auth()).json()["agents"]
    assert sorted(a["id"] for a in listed) == ["aider", "claude-code"]
    refused = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "opencode"})
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid-agent",
        "detail": 'agent "opencode" not in catalogue {aider, claude-code}',
    }
    assert api.http.post(SESSIONS, headers=api.auth(), json={"agent": "aider"}).status_code == 201


def test_a_waiting_attach_reads_the_store_once(make_api, silent_git, monkeypatch):
    """Issue 11: an attach waiting for Ready is woken by the informer's events; while
    nothing changes it reads no store (before: a read every FALLBACK_POLL, 2 s, per
    waiting attach: 300 of them pushed a neighbour's p99 to 378 ms)."""
    monkeypatch.setattr(terminal_routes, "READY_WAIT", 1.5)
    monkeypatch.setattr(terminal_routes, "FALLBACK_POLL", 0.05)
    api = make_api(store="memory", git_base_url=silent_git)
    h = api.auth()
    created = api.http.post(
        SESSIONS, headers=h, json={"agent": "aider", "name": "slow", "repo": "acme/site"}
    )
    assert created.status_code == 201
    store = api.deps.store
    real_get = store.get
    reads: list[str] = []

    async def counting_get(namespace, name):
        reads.append(name)
        return await real_get(namespace, name)

    monkeypatch.setattr(store, "get", counting_get)
    url = f"{api.server.ws_url}{SESSIONS}/slow/attach?access_token={api.token()}"
    code, _ = asyncio.run(close_code(url))
    assert code == 1013  # still not Ready after the wait
    assert reads.count("slow") <= 2, reads  # its one read (the controller's own aside)
