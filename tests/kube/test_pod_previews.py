"""The pod's side of Kubernetes previews: a real ``sandbox pty-server`` process runs the
commands the operator asks for through its operator-only ``/previews`` routes, opened by
the probe token and by nothing else (docs/kubernetes.md, "Previews")."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.waiting import wait_for

from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.terminal.preview_runner import bound, listening, loopback
from openova_sandbox.testing.server import free_port

from .real_pty_server import PtyServer, running_pty_server

PROBE = "probe-secret-for-previews"
OPERATOR = {"Authorization": f"Bearer {PROBE}"}
SERVE = "exec python3 -m http.server $PORT --bind 127.0.0.1"


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[PtyServer, EmbeddedIssuer]]:
    issuer = EmbeddedIssuer.load_or_create(tmp_path / "pty-data")
    with running_pty_server(tmp_path, probe_token=PROBE) as server:
        yield server, issuer


def _runs(server: PtyServer) -> dict[int, dict[str, Any]]:
    answer = httpx.get(f"{server.url}/previews", headers=OPERATOR)
    assert answer.status_code == 200, answer.text
    return {r["port"]: r for r in answer.json()["previews"]}


def _status(server: PtyServer, port: int) -> str:
    return str((_runs(server).get(port) or {}).get("status", ""))


def test_an_idle_pod_loads_no_preview_code_and_stays_lean(
    pod: tuple[PtyServer, EmbeddedIssuer],
) -> None:
    server, _ = pod
    rss = server.rss_bytes()
    print(f"idle pty-server RSS {rss / 2**20:.1f} MiB")
    assert rss <= 30 * 2**20
    maps = Path(f"/proc/{server.pid}/maps").read_text()
    assert "preview_runner" not in maps  # nothing compiled of it either (a .so)


def test_the_operator_runs_a_server_lists_it_and_stops_it(
    pod: tuple[PtyServer, EmbeddedIssuer],
) -> None:
    server, _ = pod
    (server.workdir / "index.html").write_text("<h1>from the pod</h1>")
    port = free_port()
    put = httpx.put(
        f"{server.url}/previews/{port}", json={"id": "run-1", "command": SERVE}, headers=OPERATOR
    )
    assert put.status_code == 200, put.text
    assert put.json()["status"] in ("starting", "listening")
    wait_for("the preview listening", lambda: _status(server, port) == "listening")
    assert "loopback address only" in _runs(server)[port]["message"]  # bound to 127.0.0.1
    page = httpx.get(f"http://127.0.0.1:{port}/index.html")
    assert page.text == "<h1>from the pod</h1>"
    # the same id again is a no-op: the server is not restarted
    again = httpx.put(
        f"{server.url}/previews/{port}", json={"id": "run-1", "command": SERVE}, headers=OPERATOR
    )
    assert again.json()["status"] == "listening"
    assert "GET /index.html" in _runs(server)[port]["output"]  # the PTY's output, kept
    gone = httpx.delete(f"{server.url}/previews/{port}", headers=OPERATOR)
    assert gone.status_code == 200
    assert not listening(port)  # ended before the answer
    assert _runs(server) == {}
    assert httpx.delete(f"{server.url}/previews/{port}", headers=OPERATOR).status_code == 404


def test_loopback_addresses_are_told_apart(tmp_path: Path) -> None:
    """A server bound to loopback only cannot be reached through its Service: said."""
    net = tmp_path / "net"
    net.mkdir()
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
    (net / "tcp").write_text(
        head
        + "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0\n"
        + "   1: 00000000:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0\n"
        + "   2: 0100007F:1F42 0100007F:9999 01 00000000:00000000 00:00000000 00000000 0\n"
    )
    (net / "tcp6").write_text(
        head
        + "   0: 00000000000000000000000001000000:1F43 "
        + "00000000000000000000000000000000:0000 0A 0 0 0 0\n"
        + "   1: 0000000000000000FFFF00000100007F:1F44 "
        + "00000000000000000000000000000000:0000 0A 0 0 0 0\n"
    )
    proc = str(tmp_path)
    assert bound(8000, proc) == ["0100007F"] and loopback("0100007F")
    assert bound(8001, proc) == ["00000000"] and not loopback("00000000")
    assert bound(8002, proc) == []  # an established connection, not a listener
    assert [loopback(a) for a in bound(8003, proc) + bound(8004, proc)] == [True, True]
    assert not loopback("0000000000000000FFFF00000A000001")  # ::ffff:10.0.0.1
    assert not listening(8005, proc)


def test_an_exit_is_reported_with_its_code_and_output_and_a_new_id_runs_again(
    pod: tuple[PtyServer, EmbeddedIssuer],
) -> None:
    server, _ = pod
    port = free_port()
    command = 'echo "building on $PORT in $PWD"; exit 3'
    httpx.put(
        f"{server.url}/previews/{port}", json={"id": "a", "command": command}, headers=OPERATOR
    )
    wait_for("the exit", lambda: _status(server, port) == "exited")
    run = _runs(server)[port]
    assert run["exitCode"] == 3
    assert f"building on {port} in {server.workdir}" in run["output"]
    # the same id stays exited; another id is a new run
    httpx.put(
        f"{server.url}/previews/{port}", json={"id": "a", "command": command}, headers=OPERATOR
    )
    assert _runs(server)[port]["id"] == "a"
    httpx.put(
        f"{server.url}/previews/{port}",
        json={"id": "b", "command": "exit 4"},
        headers=OPERATOR,
    )
    wait_for("the second exit", lambda: _runs(server)[port].get("exitCode") == 4)
    assert _runs(server)[port]["id"] == "b"


def test_a_port_another_process_holds_is_refused_with_a_reason(
    pod: tuple[PtyServer, EmbeddedIssuer],
) -> None:
    server, _ = pod
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        put = httpx.put(
            f"{server.url}/previews/{port}", json={"id": "x", "command": SERVE}, headers=OPERATOR
        )
    assert put.json()["status"] == "refused"
    assert "already in use" in put.json()["message"]
    assert _runs(server)[port]["status"] == "refused"


def test_only_the_probe_token_opens_the_preview_routes(
    pod: tuple[PtyServer, EmbeddedIssuer],
) -> None:
    server, issuer = pod
    owner = issuer.mint(sub="u1", email="dev@acme.com", org="acme")
    admin = issuer.mint(sub="u2", email="boss@acme.com", org="acme", roles=["org-admin"])
    # the owner's token opens the sessions...
    sessions = httpx.get(f"{server.url}/sessions", headers={"Authorization": f"Bearer {owner}"})
    assert sessions.status_code == 200
    port = free_port()
    for token in (owner, admin, "", "not-a-token", PROBE + "x"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        cookie = {"catalyst_session": owner}
        for method, body in (("GET", None), ("PUT", {"id": "u", "command": "exit 0"})):
            path = "/previews" if method == "GET" else f"/previews/{port}"
            answer = httpx.request(
                method, f"{server.url}{path}", json=body, headers=headers, cookies=cookie
            )
            assert answer.status_code == 401, (token[:8], method, answer.text)
        delete = httpx.delete(f"{server.url}/previews/{port}", headers=headers)
        assert delete.status_code == 401
        with_query = httpx.get(f"{server.url}/previews", params={"access_token": owner})
        assert with_query.status_code == 401
    assert _runs(server) == {}  # nothing was started
    # ...and the probe token opens nothing else than /idle and /previews
    assert httpx.get(f"{server.url}/sessions", headers=OPERATOR).status_code == 401
    assert httpx.get(f"{server.url}/idle", headers=OPERATOR).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/previews/80", {"id": "a", "command": "x"}, "port must be an integer in 1024-65535"),
        ("/previews/abc", {"id": "a", "command": "x"}, "port must be an integer"),
        ("/previews/70000", {"id": "a", "command": "x"}, "1024-65535"),
        ("/previews/8000", {"command": "x"}, "id: 1-64 characters"),
        ("/previews/8000", {"id": "a/b", "command": "x"}, "id: 1-64 characters"),
        ("/previews/8000", {"id": "a", "command": " "}, "command: a non-empty string"),
        ("/previews/8000", {"id": "a", "command": "x" * 4097}, "at most 4096"),
        ("/previews/8000", {"id": "a", "command": "a\0b"}, "without NUL"),
        ("/previews/8000", ["not", "an", "object"], "body must be a JSON object"),
    ],
)
def test_malformed_requests_are_400_with_a_detail(
    pod: tuple[PtyServer, EmbeddedIssuer], path: str, body: Any, detail: str
) -> None:
    server, _ = pod
    answer = httpx.put(f"{server.url}{path}", json=body, headers=OPERATOR)
    assert answer.status_code == 400, answer.text
    assert detail in answer.json()["detail"]


def test_a_body_that_is_not_json_is_400(pod: tuple[PtyServer, EmbeddedIssuer]) -> None:
    server, _ = pod
    answer = httpx.put(f"{server.url}/previews/8000", content=b"{nope", headers=OPERATOR)
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["detail"]
