"""HTTP routes of the pty-server and what they do to real processes."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from pty_harness import ADMIN, OWNER, STRANGER, read_until, start_pty_server

pytestmark = pytest.mark.timeout(90)


def _auth(token: str = OWNER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


async def _wait_for(predicate: Any, *, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_healthz_and_metrics_need_no_token(start_server: Any) -> None:
    server = await start_server()
    for method in ("GET", "POST", "HEAD"):
        response = await server.http.request(method, "/healthz")
        assert response.status_code == 200
    assert (await server.http.get("/healthz")).text == "ok"
    text = (await server.http.get("/metrics")).text
    for name in (
        "pty_server_websocket_connections",
        "pty_server_sessions",
        "pty_server_output_bytes_total",
        "pty_server_input_bytes_total",
        "pty_server_viewer_resyncs_total",
        "process_resident_memory_bytes",
    ):
        assert name in text


async def test_metrics_follow_sessions_connections_and_bytes(start_server: Any) -> None:
    server = await start_server()
    ws = await server.attach("box")
    await read_until(ws, b"agent ready")
    await ws.send("count me\r")
    await read_until(ws, b"agent: COUNT ME")

    def value(text: str, name: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith(name + " "))
        return float(line.split()[-1])

    text = (await server.http.get("/metrics")).text
    assert value(text, "pty_server_sessions") == 1
    assert value(text, "pty_server_websocket_connections") == 1
    assert value(text, "pty_server_input_bytes_total") == len(b"count me\r")
    assert value(text, "pty_server_output_bytes_total") >= len(b"agent: COUNT ME")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/idle"),
        ("GET", "/sessions"),
        ("POST", "/sessions"),
        ("GET", "/sessions/x"),
        ("DELETE", "/sessions/x"),
        ("POST", "/sessions/x/resize"),
        ("POST", "/sessions/x/signal"),
    ],
)
async def test_every_other_route_needs_the_owner_or_org_admin(
    start_server: Any, method: str, path: str
) -> None:
    server = await start_server()
    none = await server.http.request(method, path)
    assert none.status_code == 401
    assert none.json() == {"error": "unauthenticated"}  # bare, as on the sessions API
    forged = await server.http.request(method, path, headers=_auth("forged"))
    assert forged.status_code == 401
    assert forged.json() == {"error": "unauthenticated"}
    stranger = await server.http.request(method, path, headers=_auth(STRANGER))
    assert stranger.status_code == 403
    assert stranger.json()["error"] == "forbidden"


async def test_create_get_list_delete_a_session(start_server: Any) -> None:
    server = await start_server()
    created = await server.http.post(
        "/sessions", json={"agent": "py-agent", "rows": 30, "cols": 100}, headers=_auth(ADMIN)
    )
    assert created.status_code == 201
    body = created.json()
    assert re.fullmatch(r"[0-9a-f]{24}", body["id"])
    assert body["createdAt"].endswith("Z")
    info = (await server.http.get(f"/sessions/{body['id']}", headers=_auth())).json()
    assert info["agent"] == "py-agent"
    assert (info["rows"], info["cols"], info["viewers"], info["exited"]) == (30, 100, 0, False)
    assert isinstance(info["pid"], int)
    assert "exitCode" not in info
    listed = (await server.http.get("/sessions", headers=_auth())).json()
    assert listed == {"sessions": [body["id"]]}
    gone = await server.http.delete(f"/sessions/{body['id']}", headers=_auth())
    assert gone.status_code == 204
    assert not _alive(info["pid"])
    assert (await server.http.get(f"/sessions/{body['id']}", headers=_auth())).status_code == 404
    assert (await server.http.delete(f"/sessions/{body['id']}", headers=_auth())).status_code == 404


async def test_idle_reports_activity_sessions_and_viewers(start_server: Any) -> None:
    server = await start_server()
    first = (await server.http.get("/idle", headers=_auth())).json()
    assert first["activeSessions"] == 0
    assert first["attachedViewers"] == 0
    assert first["agentBusy"] is False
    ws = await server.attach("box")
    await read_until(ws, b"agent ready")
    now = (await server.http.get("/idle", headers=_auth())).json()
    assert now["activeSessions"] == 1
    assert now["attachedViewers"] == 1
    assert now["agentBusy"] is True  # it just printed its banner
    assert now["lastActivityAt"] > first["lastActivityAt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", now["lastActivityAt"])


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{not json", "invalid-request"),
        ("[1, 2]", "invalid-request"),
        ('"text"', "invalid-request"),
        ('{"rows": 0}', "invalid-request"),
        ('{"cols": 1001}', "invalid-request"),
        ('{"rows": "many"}', "invalid-request"),
        ('{"command": "ls"}', "invalid-request"),
        ('{"extraArgs": [1, {}]}', "invalid-request"),
        ('{"envMap": {"A": 1}}', "invalid-request"),
        ('{"env": ["NOEQUALS"]}', "invalid-env"),
        ('{"envMap": {"1BAD": "x"}}', "invalid-env"),
        ('{"agent": "py-agent", "command": ["sh"]}', "ambiguous-request"),
        ('{"agent": "nope"}', "invalid-agent"),
        ('{"agent": ""}', "invalid-agent"),
        ('{"agent": "needs-key"}', "missing-env"),
    ],
)
async def test_bad_create_bodies_are_400_with_a_detail(
    start_server: Any, body: str, code: str
) -> None:
    server = await start_server()
    response = await server.http.post(
        "/sessions", content=body, headers={**_auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["error"] == code
    assert payload["detail"]
    assert server.registry.list("box") == []


async def test_missing_env_names_the_variable_and_request_env_satisfies_it(
    start_server: Any,
) -> None:
    server = await start_server()
    missing = await server.http.post("/sessions", json={"agent": "needs-key"}, headers=_auth())
    assert "MAGIC_KEY" in missing.json()["detail"]
    ok = await server.http.post(
        "/sessions",
        json={"agent": "needs-key", "envMap": {"MAGIC_KEY": "1"}, "extraArgs": ["-c", "0"]},
        headers=_auth(),
    )
    assert ok.status_code == 201


async def test_no_agent_and_no_default_is_missing_spec(start_server: Any) -> None:
    server = await start_server(default_agent="")
    response = await server.http.post("/sessions", json={}, headers=_auth())
    assert response.status_code == 400
    assert response.json()["error"] == "missing-spec"


async def test_uninstalled_agent_is_a_500_with_the_install_hint(start_server: Any) -> None:
    server = await start_server()
    response = await server.http.post("/sessions", json={"agent": "ghost"}, headers=_auth())
    assert response.status_code == 500
    assert response.json()["error"] == "spawn-failed"
    assert "pip install ghost-agent" in response.json()["detail"]


async def test_session_limit_is_429(start_server: Any) -> None:
    server = await start_server(session_limit=2)
    for _ in range(2):
        await server.create({"command": ["cat"]})
    response = await server.http.post("/sessions", json={"command": ["cat"]}, headers=_auth())
    assert response.status_code == 429
    assert response.json()["error"] == "session-limit"


async def test_env_is_clean_and_carries_sandbox_identity(start_server: Any) -> None:
    os.environ["LEAKY_SERVER_SECRET"] = "do-not-pass"
    try:
        server = await start_server()
        sid = await server.create(
            {"command": ["sh", "-c", "read go; env | sort; echo DONE"], "env": ["EXTRA=yes"]}
        )
        ws = await server.attach(sid)
        await ws.send("\r")
        out = (await read_until(ws, b"DONE")).decode()
    finally:
        del os.environ["LEAKY_SERVER_SECRET"]
    for line in (
        "SANDBOX_ID=box",
        "SANDBOX_NAMESPACE=acme",
        "SANDBOX_ORG_ID=acme",
        "SANDBOX_OWNER=dev@acme.com",
        "TERM=xterm-256color",
        "EXTRA=yes",
        "OPENAI_API_KEY=sk-secret",
    ):
        assert line in out
    assert "LEAKY_SERVER_SECRET" not in out


async def test_cwd_defaults_to_the_sandbox_workdir(start_server: Any) -> None:
    server = await start_server()
    sid = await server.create({"command": ["sh", "-c", "read go; pwd"]})
    ws = await server.attach(sid)
    await ws.send("\r")
    out = await read_until(ws, str(server.workdir).encode())
    assert str(server.workdir).encode() in out
    missing = await server.http.post(
        "/sessions", json={"command": ["pwd"], "cwd": "/no/such/dir"}, headers=_auth()
    )
    assert missing.status_code == 500
    assert "/no/such/dir" in missing.json()["detail"]


async def test_resize_reaches_the_process(start_server: Any) -> None:
    server = await start_server()
    sid = await server.create({"agent": "sovereign-shell"})
    ws = await server.attach(sid)
    resized = await server.http.post(
        f"/sessions/{sid}/resize", json={"rows": 42, "cols": 123}, headers=_auth()
    )
    assert resized.status_code == 204
    await ws.send("stty size\r")
    await read_until(ws, b"42 123")
    info = (await server.http.get(f"/sessions/{sid}", headers=_auth())).json()
    assert (info["rows"], info["cols"]) == (42, 123)


@pytest.mark.parametrize(
    "body",
    ['{"rows": 0, "cols": 80}', '{"rows": 24}', '{"rows": 24, "cols": 5000}', "nope", "[]"],
)
async def test_bad_resize_is_400(start_server: Any, body: str) -> None:
    server = await start_server()
    sid = await server.create({"command": ["cat"]})
    response = await server.http.post(f"/sessions/{sid}/resize", content=body, headers=_auth())
    assert response.status_code == 400
    assert response.json()["detail"]


async def test_resize_and_signal_of_unknown_session_are_404(start_server: Any) -> None:
    server = await start_server()
    for path, body in (("resize", {"rows": 1, "cols": 1}), ("signal", {"signal": "INT"})):
        response = await server.http.post(f"/sessions/nope/{path}", json=body, headers=_auth())
        assert response.status_code == 404
        assert response.json()["error"] == "not-found"


async def test_signal_int_interrupts_sleep(start_server: Any) -> None:
    server = await start_server()
    sid = await server.create({"command": ["sleep", "60"]})
    response = await server.http.post(
        f"/sessions/{sid}/signal", json={"signal": "int"}, headers=_auth()
    )
    assert response.status_code == 204
    session = server.registry.get("box", sid)
    await asyncio.wait_for(session.wait_exited(), 15)
    info = (await server.http.get(f"/sessions/{sid}", headers=_auth())).json()
    assert info["exited"] is True
    assert info["exitCode"] == 130  # 128 + SIGINT


@pytest.mark.parametrize("body", ['{"signal": "KILL"}', '{"signal": 9}', "{}", "[]"])
async def test_unsupported_signal_is_400(start_server: Any, body: str) -> None:
    server = await start_server()
    sid = await server.create({"command": ["cat"]})
    response = await server.http.post(f"/sessions/{sid}/signal", content=body, headers=_auth())
    assert response.status_code == 400
    if "KILL" in body:
        assert response.json()["error"] == "unsupported signal"  # the spec's string
        assert response.json()["detail"].startswith("unsupported signal")


async def test_delete_ends_the_whole_process_group_even_a_stubborn_grandchild(
    start_server: Any,
) -> None:
    server = await start_server()
    script = 'trap "" HUP TERM; sleep 300 & echo child=$!; wait'
    sid = await server.create({"command": ["sh", "-c", script]})
    ws = await server.attach(sid)
    out = await read_until(ws, b"child=", timeout=15)  # (a snapshot when printed already)
    out += await read_until(ws, b"\n") if not re.search(rb"child=\d+\D", out) else b""
    match = re.search(rb"child=(\d+)", out)
    assert match, out
    grandchild = int(match.group(1))
    leader = server.registry.get("box", sid).pid
    assert _alive(grandchild)
    response = await server.http.delete(f"/sessions/{sid}", headers=_auth())
    assert response.status_code == 204
    assert not _alive(leader)
    assert not _alive(grandchild)  # it ignored HUP and TERM: the ladder reached KILL


async def test_exited_session_reports_its_exit_code(start_server: Any) -> None:
    server = await start_server()
    sid = await server.create({"command": [sys.executable, "-c", "raise SystemExit(7)"]})
    session = server.registry.get("box", sid)
    await asyncio.wait_for(session.wait_exited(), 15)
    info = (await server.http.get(f"/sessions/{sid}", headers=_auth())).json()
    assert (info["exited"], info["exitCode"]) == (True, 7)
    # An exited session does not count against the limit.
    assert server.registry.live_count("box") == 0


async def test_ring_bytes_per_request_is_clamped(start_server: Any) -> None:
    server = await start_server()
    big = await server.create({"command": ["cat"], "ringBytes": 1 << 30})
    small = await server.create({"command": ["cat"], "ringBytes": -5})
    assert server.registry.get("box", big).core.ring.capacity == 16 * 1024 * 1024
    assert server.registry.get("box", small).core.ring.capacity == 1024 * 1024


async def test_server_shutdown_closes_viewers_and_ends_processes(tmp_path: Path) -> None:
    server, task, running = await start_pty_server(tmp_path)
    ws = await running.attach("box")
    await read_until(ws, b"agent ready")
    pid = running.registry.get("box", "box").pid
    server.should_exit = True  # the server's shutdown, then the app's closes the registry
    await asyncio.wait_for(task, 30)
    assert not _alive(pid)
    await _wait_for(lambda: ws.close_code is not None, timeout=20)
    assert running.registry.total_live() == 0
    await running.http.aclose()
