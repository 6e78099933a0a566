"""The control plane lists a sandbox's terminals with one call to its pod (Kubernetes
mode): the pod's ``GET /sessions?details=1`` carries each session's ``GET
/sessions/{id}`` body, so a list (the console's terminal tabs, MCP's
``sandbox.terminals`` and ``session.info``) no longer costs one call per terminal. A pod
older than ``details`` ignores the query; the control plane then asks per session, as
before, and gets the same list.

Real parts: the pod's terminal server (the ``PtyApp`` on its own HTTP server, as
``sandbox pty-server`` runs it) with real shells in real PTYs, real tokens from the
embedded issuer; the control plane's ``RemoteTerminals`` over real HTTP. Its transport is
httpx's own, wrapped to count the requests that go out — and, for the older pod, to
drop the query string as a server that does not know it would ignore it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from openova_sandbox.api.terminal_edge.standalone import build_standalone_app
from openova_sandbox.auth.authenticator import build_authenticator
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.domain.model import ObjectMeta, Sandbox, SandboxSpec, SandboxStatus
from openova_sandbox.services.remote_terminals import STATUS_NAMESPACE, RemoteTerminals
from openova_sandbox.testing.server import free_port, serve_in_thread
from support.waiting import wait_for

pytestmark = pytest.mark.timeout(60)


class Recording(httpx.AsyncHTTPTransport):
    """httpx's transport, recording each request's method and path (with its query);
    ``ignore_details``: the query is dropped from ``GET /sessions`` before it goes out,
    as a terminal server that predates ``details`` ignores it."""

    def __init__(self, *, ignore_details: bool = False) -> None:
        super().__init__()
        self.sent: list[str] = []
        self.ignore_details = ignore_details

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.ignore_details and request.url.path == "/sessions":
            request.url = request.url.copy_with(query=None)
        self.sent.append(f"{request.method} {request.url.raw_path.decode()}")
        return await super().handle_async_request(request)


@dataclass
class Pod:
    url: str
    token: str
    sandbox: Sandbox

    def remote(self, transport: Recording) -> RemoteTerminals:
        return RemoteTerminals(
            store=None,  # type: ignore[arg-type]  # listing reads neither
            sessions=None,  # type: ignore[arg-type]
            url_template=self.url,
            transport=transport,
        )


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"]}]))
    (tmp_path / "work").mkdir()
    settings = load_settings(
        data_dir=tmp_path / "data",
        agents_path=str(agents),
        pty_sandbox_id="box",
        pty_namespace="acme",
        pty_owner_email="dev@acme.com",
        pty_org_id="acme",
        pty_default_agent="aider",
        pty_workdir=str(tmp_path / "work"),
    )
    issuer = EmbeddedIssuer.load_or_create(tmp_path / "data")
    app = build_standalone_app(
        settings, authenticate=build_authenticator(settings, issuer=issuer).authenticate
    )
    sandbox = Sandbox(
        metadata=ObjectMeta(name="box", namespace="acme"),
        spec=SandboxSpec(owner_email="dev@acme.com", org_slug="acme"),
        status=SandboxStatus(extra={STATUS_NAMESPACE: "sandbox-dev-at-acme-com"}),
    )
    with serve_in_thread(app, port=free_port()) as running:
        yield Pod(running.url, issuer.mint(sub="u-1", email="dev@acme.com", org="acme"), sandbox)


def _open_terminals(pod: Pod, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {pod.token}"}
    made = [
        httpx.post(f"{pod.url}/sessions", json={"agent": "aider"}, headers=headers)
        for _ in range(count)
    ]
    assert all(r.status_code == 201 for r in made), [r.text for r in made]
    return [r.json()["id"] for r in made]


def test_the_pods_listing_details_are_each_sessions_own_body(pod: Pod) -> None:
    ids = _open_terminals(pod, 2)
    headers = {"Authorization": f"Bearer {pod.token}"}
    listed = httpx.get(f"{pod.url}/sessions", params={"details": "1"}, headers=headers).json()
    assert listed["sessions"] == ids
    # (``viewers`` and every other field as GET /sessions/{id} answers, in list order)
    assert listed["details"] == [
        httpx.get(f"{pod.url}/sessions/{sid}", headers=headers).json() for sid in ids
    ]
    # without it, or with 0, the body is exactly the spec's
    for params in ({}, {"details": "0"}):
        plain = httpx.get(f"{pod.url}/sessions", params=params, headers=headers)
        assert plain.json() == {"sessions": ids}
    bad = httpx.get(f"{pod.url}/sessions", params={"details": "yes"}, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid-request"
    assert "details" in bad.json()["detail"] and "'yes'" in bad.json()["detail"]
    # the listing stays closed to anyone without a token
    assert httpx.get(f"{pod.url}/sessions", params={"details": "1"}).status_code == 401


def test_the_control_plane_lists_terminals_in_one_call(pod: Pod) -> None:
    ids = _open_terminals(pod, 3)
    transport = Recording()
    listed = asyncio.run(pod.remote(transport).list_terminals(pod.sandbox, token=pod.token))
    assert [t["id"] for t in listed] == ids
    assert {t["agent"] for t in listed} == {"aider"}
    assert all(
        t["attachUrl"].endswith(f"/terminals/{sid}/attach")
        for t, sid in zip(listed, ids, strict=True)
    )
    assert transport.sent == ["GET /sessions?details=1"]


def test_an_older_pod_is_asked_per_session_and_lists_the_same(pod: Pod) -> None:
    ids = _open_terminals(pod, 3)
    headers = {"Authorization": f"Bearer {pod.token}"}
    # one of them ends (the pod lists it, exited, until it is deleted: left out)
    hup = httpx.post(f"{pod.url}/sessions/{ids[1]}/signal", json={"signal": "HUP"}, headers=headers)
    assert hup.status_code == 204
    wait_for(
        "the signalled shell to exit",
        lambda: httpx.get(f"{pod.url}/sessions/{ids[1]}", headers=headers).json()["exited"],
    )
    old, new = Recording(ignore_details=True), Recording()
    from_old = asyncio.run(pod.remote(old).list_terminals(pod.sandbox, token=pod.token))
    from_new = asyncio.run(pod.remote(new).list_terminals(pod.sandbox, token=pod.token))
    assert from_old == from_new
    assert [t["id"] for t in from_new] == [ids[0], ids[2]]
    assert old.sent == ["GET /sessions"] + [f"GET /sessions/{sid}" for sid in ids]
    assert new.sent == ["GET /sessions?details=1"]
