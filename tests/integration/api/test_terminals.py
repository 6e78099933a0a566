"""Control-plane terminals over real WebSockets: the browser's path to the agent."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
import websockets

from openova_sandbox.controller import reconcile as reconcile_module
from openova_sandbox.controller import runner as runner_module
from support.processes import descendants_named

SESSIONS = "/api/v1/sandbox/sessions"
FAKE_AGENTS = [
    {"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"], "requiredEnv": []},
    {"slug": "opencode", "binary": "/bin/cat", "defaultArgs": [], "requiredEnv": []},
]


@pytest.fixture
def tapi(make_api, tmp_path):
    (tmp_path / "agents.json").write_text(json.dumps(FAKE_AGENTS))
    return make_api(store="memory")


def wait_ready(api, headers, sandbox_id, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = api.http.get(f"{SESSIONS}/{sandbox_id}", headers=headers).json()
        if item.get("phase") in ("Ready", "Failed"):
            return item
        time.sleep(0.05)
    raise AssertionError(f"{sandbox_id} not ready: {item}")


async def wait_for_child(parent: int, name: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not descendants_named(parent, name):
            await asyncio.sleep(0.05)


def ws_url(api, sandbox_id, token, suffix="attach"):
    return f"{api.server.ws_url}{SESSIONS}/{sandbox_id}/{suffix}?access_token={token}"


async def read_until(ws, needle: bytes, timeout=10.0) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            frame = await ws.recv()
            seen += frame if isinstance(frame, bytes) else frame.encode()
    return seen


def test_created_sandbox_becomes_ready_with_every_condition(make_api, tmp_path, monkeypatch):
    # Readiness follows from the create event alone: with the controller's timed
    # re-checks (the wait poll and the sweep) pushed out to an hour, the sandbox still
    # becomes ready within the wait, however slow the machine is.
    monkeypatch.setattr(reconcile_module, "WAIT_POLL_SECONDS", 3600.0)
    monkeypatch.setattr(runner_module, "SWEEP_SECONDS", 3600.0)
    (tmp_path / "agents.json").write_text(json.dumps(FAKE_AGENTS))
    tapi = make_api(store="memory")
    h = tapi.auth()
    tapi.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    item = wait_ready(tapi, h, "box")
    assert item["status"] == "running"
    types = [c["type"] for c in item["conditions"]]
    assert types == [
        "NamespaceReady",
        "RBACReady",
        "PVCsReady",
        "PtyReady",
        "McpReady",
        "TokenReady",
        "Ready",
    ]
    assert all(c["status"] == "True" for c in item["conditions"])
    workspace = Path(tapi.deps.settings.data_dir) / "workspaces" / "acme" / "box"
    assert workspace.is_dir()


def test_attach_type_replay_second_viewer_resize_signal_delete(tapi):
    h = tapi.auth()
    token = tapi.token()
    tapi.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    wait_ready(tapi, h, "box")

    async def scenario():
        async with websockets.connect(ws_url(tapi, "box", token)) as one:
            await one.send("echo hello-$((40+2))\n")
            await read_until(one, b"hello-42")
            async with websockets.connect(ws_url(tapi, "box", token)) as two:
                replay = await two.recv()
                assert b"hello-42" in replay  # the second viewer gets the screen so far
                await two.send("echo from-two-$((1+1))\n")
                await read_until(one, b"from-two-2")
                await read_until(two, b"from-two-2")
        # reconnect: the replay holds everything, then live output follows
        async with websockets.connect(ws_url(tapi, "box", token)) as again:
            replay = await again.recv()
            assert b"hello-42" in replay
            assert b"from-two-2" in replay
            resize = tapi.http.post(
                f"{SESSIONS}/box/resize", headers=h, json={"rows": 33, "cols": 101}
            )
            assert resize.status_code == 204
            await again.send("stty size\n")
            await read_until(again, b"33 101")
            (shell_pid,) = [s.pid for s in tapi.deps.terminals.registry.list("acme/box")]
            await again.send("sleep 30; echo not-interrupted\n")
            # the interrupt must find the sleep running, not the shell still reading
            await wait_for_child(shell_pid, "sleep")
            sig = tapi.http.post(f"{SESSIONS}/box/signal", headers=h, json={"signal": "int"})
            assert sig.status_code == 204
            await again.send("echo after-$((2*3))\n")
            seen = await read_until(again, b"after-6", timeout=15)  # well under 30 s
            assert b"\r\nnot-interrupted" not in seen  # only the echo of the typed line

    asyncio.run(scenario())
    item = tapi.http.get(f"{SESSIONS}/box", headers=h).json()
    pids = [s.pid for s in tapi.deps.terminals.registry.list("acme/box")]
    assert pids
    assert tapi.http.delete(f"{SESSIONS}/box", headers=h).status_code == 204
    deadline = time.monotonic() + 10
    while tapi.http.get(f"{SESSIONS}/box", headers=h).status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (Path(tapi.deps.settings.data_dir) / "workspaces" / "acme" / "box").exists()
    del item


def test_attach_is_refused_to_strangers_and_foreign_origins(tapi):
    h = tapi.auth()
    tapi.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    wait_ready(tapi, h, "box")
    bob = tapi.token(sub="bob-sub-12", email="bob@acme.com")
    eve = tapi.token(sub="eve-sub-12", email="eve@evil.io", org="evil")

    async def closed_with(url, **kw):
        async with websockets.connect(url, **kw) as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 15)
            return info.value.rcvd.code

    async def scenario():
        assert await closed_with(ws_url(tapi, "box", "garbage")) == 1008
        assert await closed_with(ws_url(tapi, "box", bob)) == 1008
        assert await closed_with(ws_url(tapi, "box", eve)) == 1008
        evil_origin = {"origin": "http://evil.example"}
        assert (
            await closed_with(ws_url(tapi, "box", tapi.token()), additional_headers=evil_origin)
            == 1008
        )
        # the browser's own origin is fine
        own = {"origin": tapi.url}
        async with websockets.connect(
            ws_url(tapi, "box", tapi.token()), additional_headers=own
        ) as ws:
            assert isinstance(await asyncio.wait_for(ws.recv(), 15), bytes)

    asyncio.run(scenario())


def test_extra_terminals_and_session_limit(make_api, tmp_path):
    """Extra terminals get every session of the quota but one: the agent's slot is kept
    even before the agent was first started."""
    (tmp_path / "agents.json").write_text(json.dumps(FAKE_AGENTS))
    api = make_api(store="memory", default_quota_sessions=3)
    h = api.auth()
    api.http.post(SESSIONS, headers=h, json={"agent": "opencode", "name": "box"})
    wait_ready(api, h, "box")
    shell = api.http.post(f"{SESSIONS}/box/terminals", headers=h, json={"agent": "sovereign-shell"})
    assert shell.status_code == 201
    body = shell.json()
    assert len(body["id"]) == 24
    assert body["attachUrl"] == f"{SESSIONS}/box/terminals/{body['id']}/attach"
    second = api.http.post(
        f"{SESSIONS}/box/terminals", headers=h, json={"agent": "sovereign-shell"}
    )
    assert second.status_code == 201
    third = api.http.post(f"{SESSIONS}/box/terminals", headers=h, json={"agent": "sovereign-shell"})
    assert third.status_code == 429
    assert third.json()["error"] == "session-limit"
    assert "kept for the agent" in third.json()["detail"]
    assert "concurrentSessions = 3" in third.json()["detail"]
    bad = api.http.post(f"{SESSIONS}/box/terminals", headers=h, json={"agent": "vim"})
    assert bad.status_code == 400

    async def scenario():
        url = f"{api.server.ws_url}{body['attachUrl']}?access_token={api.token()}"
        async with websockets.connect(url) as ws:
            await ws.send("echo rescue-$((3*3))\r")
            await read_until(ws, b"rescue-9")
        # the primary agent (cat) still starts: its slot was kept
        async with websockets.connect(ws_url(api, "box", api.token())) as ws:
            await ws.recv()  # the replay: the agent is running
            await ws.send("kept-slot\r")
            await read_until(ws, b"kept-slot")
        # closing an extra frees a slot for another
        gone = api.http.delete(f"{SESSIONS}/box/terminals/{body['id']}", headers=h)
        assert gone.status_code == 204
        again = api.http.post(
            f"{SESSIONS}/box/terminals", headers=h, json={"agent": "sovereign-shell"}
        )
        assert again.status_code == 201

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("resize", {"rows": 0, "cols": 80}),
        ("resize", {"rows": "x", "cols": 80}),
        ("resize", {"rows": 24, "cols": 1001}),
        ("signal", {"signal": "KILL"}),
        ("signal", {}),
    ],
)
def test_bad_terminal_requests(tapi, path, body):
    h = tapi.auth()
    tapi.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    resp = tapi.http.post(f"{SESSIONS}/box/{path}", headers=h, json=body)
    assert resp.status_code == 400
    assert resp.json()["detail"]
    if path == "signal":
        assert resp.json()["error"] == "unsupported signal"


def test_attach_before_ready_is_woken_by_the_sandbox_turning_ready(tapi, monkeypatch):
    """The wait for Ready listens to the sandbox's changes (the resource cache), it does
    not poll the store: with both polls pushed out to a minute and provisioning held for
    a second, an attach made before Ready gets the agent's first bytes right after."""
    from openova_sandbox.api.routes import terminals as terminal_routes
    from openova_sandbox.controller.local import EnsureWorkspace, LocalRuntime

    monkeypatch.setattr(terminal_routes, "POLL", 60.0)
    monkeypatch.setattr(terminal_routes, "FALLBACK_POLL", 60.0)
    execute = LocalRuntime.execute

    async def slow_workspace(self, sandbox, action):
        if isinstance(action, EnsureWorkspace):
            await asyncio.sleep(1.0)
        return await execute(self, sandbox, action)

    monkeypatch.setattr(LocalRuntime, "execute", slow_workspace)
    h = tapi.auth()
    token = tapi.token()

    async def scenario() -> float:
        created = tapi.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "quick"})
        assert created.status_code == 201
        started = time.monotonic()
        async with websockets.connect(ws_url(tapi, "quick", token)) as ws:
            phase = tapi.http.get(f"{SESSIONS}/quick", headers=h).json().get("phase")
            assert phase != "Ready"  # the attach is waiting
            await ws.send("echo first-$((8*8))\n")
            await read_until(ws, b"first-64", timeout=10)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 10
