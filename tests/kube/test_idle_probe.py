"""Idle scaling from what the terminal server reports: the operator probes `/idle` with
the token it keeps in the workspace's `pty-probe` Secret, records sessions and activity,
and suspends the sandbox when nobody is attached and nothing happened for the timeout."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from openova_sandbox.testing.kubeapi import FakeKube
from openova_sandbox.testing.server import serve_in_thread

from .test_operator import SB, running_operator, sandbox_body, wait_for

NS = "sandbox-dev-at-acme-com"


class FakeTerminalServer:
    """Answers /idle as the pty-server does and remembers which bearer it was shown."""

    def __init__(self) -> None:
        old = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.report: dict[str, Any] = {
            "lastActivityAt": old,
            "activeSessions": 1,
            "attachedViewers": 1,
            "agentBusy": False,
        }
        self.bearers: list[str] = []
        self.failing = False  # answer 503, as a wedged or restarting server might

    def app(self) -> Starlette:
        async def idle(request: Request) -> JSONResponse:
            self.bearers.append(request.headers.get("authorization", ""))
            if self.failing:
                return JSONResponse({"error": "unavailable"}, status_code=503)
            return JSONResponse(self.report)

        return Starlette(routes=[Route("/idle", idle)])


def start_ready_sandbox(kube: FakeKube, http: httpx.Client, name: str) -> None:
    """Create a sandbox with a one-minute idle timeout and play the StatefulSet
    controller once its pod spec exists."""
    body = sandbox_body(name, idleScaling={"enabled": True, "timeoutMinutes": 1})
    assert http.post(SB, json=body).status_code == 201
    sts = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"
    wait_for(lambda: http.get(sts).status_code == 200)
    kube.set_ready_replicas(NS, "pty-server", 1)


@pytest.fixture
def terminal() -> Iterator[tuple[FakeTerminalServer, str]]:
    fake = FakeTerminalServer()
    with serve_in_thread(fake.app()) as server:
        yield fake, server.url


Probed = tuple[FakeTerminalServer, httpx.Client]


@pytest.fixture
def probed(
    kube: FakeKube, terminal: tuple[FakeTerminalServer, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Probed]:
    """The operator running and probing the fake terminal server, and a client on the
    fake API server."""
    fake, url = terminal
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    with (
        running_operator(kube, pty_url_template=url),
        httpx.Client(base_url=kube.url, timeout=5) as http,
    ):
        yield fake, http


def status_of(http: httpx.Client, name: str) -> dict[str, Any]:
    return dict(http.get(f"{SB}/{name}").json().get("status") or {})


def test_probe_records_activity_and_suspends_when_idle(kube: FakeKube, probed: Probed) -> None:
    fake, http = probed
    start_ready_sandbox(kube, http, "idle")

    def status() -> dict[str, Any]:
        return status_of(http, "idle")

    # a viewer is attached: the sandbox stays up; sessions and activity are recorded
    wait_for(lambda: status().get("sessions") == 1 and status().get("lastActivityAt"))
    assert status()["phase"] == "Ready"
    secret = http.get(f"/api/v1/namespaces/{NS}/secrets/pty-probe").json()
    labels = secret["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "openova-sandbox"
    assert labels["openova.io/sandbox"] == "idle"
    assert labels["openova.io/organization"] == "acme"
    assert labels["openova.io/sandbox-owner"] == "dev-at-acme-com"
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) >= 32
    assert fake.bearers
    assert set(fake.bearers) == {f"Bearer {token}"}
    sts = http.get(f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server").json()
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SANDBOX_PROBE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "pty-probe"

    # the viewer leaves; the last activity is 10 minutes old: suspended, scaled to 0
    fake.report = {**fake.report, "attachedViewers": 0, "activeSessions": 1}
    wait_for(lambda: status().get("phase") == "Suspended")
    assert status()["sessions"] == 0
    # the status is written first, the scale-down right after it
    sts_path = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"
    wait_for(lambda: http.get(sts_path).json()["spec"]["replicas"] == 0)


def test_a_failing_probe_keeps_the_sandbox_up(kube: FakeKube, probed: Probed) -> None:
    fake, http = probed
    start_ready_sandbox(kube, http, "flaky")

    def status() -> dict[str, Any]:
        return status_of(http, "flaky")

    # one answered probe records activity ten minutes old (timeout: one minute) ...
    wait_for(lambda: status().get("lastActivityAt"))
    fake.failing = True
    seen = len(fake.bearers)
    wait_for(lambda: len(fake.bearers) >= seen + 3)  # several unanswered probes
    # ... but while the server does not answer, idleness is unknown: no suspension
    assert status()["phase"] == "Ready"
    sts = http.get(f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server").json()
    assert sts["spec"]["replicas"] == 1


def test_a_busy_agent_keeps_the_sandbox_up(kube: FakeKube, probed: Probed) -> None:
    fake, http = probed
    fake.report = {**fake.report, "attachedViewers": 0, "agentBusy": True}
    start_ready_sandbox(kube, http, "busy")
    wait_for(lambda: len(fake.bearers) >= 3)  # several probes have been answered
    assert http.get(f"{SB}/busy").json()["status"]["phase"] == "Ready"
