"""Personal access tokens in Kubernetes mode: the control plane (`sandbox api`
composition) proxies terminals to a real standalone terminal server, which trusts the
issuer's keys and knows no tokens; a token is exchanged for a short JWT of the same
identity on the way (issue 11)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from openova_sandbox.api.accounts import (
    UPSTREAM_ATTACH_SECONDS,
    UPSTREAM_JWT_SECONDS,
    upstream_token,
)
from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api
from openova_sandbox.api.terminal_edge.standalone import build_standalone_app
from openova_sandbox.auth.authenticator import build_authenticator
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.domain.errors import Forbidden
from openova_sandbox.domain.principal import Principal
from openova_sandbox.store.sql import SqlStore
from openova_sandbox.testing.server import free_port, serve_in_thread

SESSIONS = "/api/v1/sandbox/sessions"
TOKENS = "/api/v1/sandbox/tokens"


class Cluster:
    def __init__(self, tmp_path: Path) -> None:
        agents = tmp_path / "agents.json"
        agents.write_text(
            json.dumps([{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"]}])
        )
        (tmp_path / "work").mkdir(exist_ok=True)
        self.pty_port = free_port()
        self.settings = load_settings(
            data_dir=tmp_path / "data",
            agents_path=str(agents),
            kube_pty_url_template=f"http://127.0.0.1:{self.pty_port}",
            pty_sandbox_id="box",
            pty_namespace="acme",
            pty_owner_email="dev@acme.com",
            pty_org_id="acme",
            pty_default_agent="aider",
            pty_workdir=str(tmp_path / "work"),
        )
        self.issuer = EmbeddedIssuer.load_or_create(tmp_path / "data")
        self.url = self.ws = ""
        self.http = httpx.Client(timeout=10)

    def jwt(self) -> dict[str, str]:
        token = self.issuer.mint(sub="u-1", email="dev@acme.com", org="acme")
        return {"Authorization": f"Bearer {token}"}

    def set_ready(self) -> None:
        async def run() -> None:
            store = SqlStore(self.settings.effective_database_url)
            await store.start()
            try:
                current = await store.get("acme", "box")
                status = replace(
                    current.status,
                    phase="Ready",
                    extra={"workspaceNamespace": "sandbox-dev-at-acme-com"},
                )
                await store.update_status(current.with_status(status))
            finally:
                await store.close()

        asyncio.run(run())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    pty_app = build_standalone_app(
        c.settings, authenticate=build_authenticator(c.settings, issuer=c.issuer).authenticate
    )
    with (
        serve_in_thread(pty_app, port=c.pty_port),
        serve_in_thread(create_app(build_api(c.settings))) as api,
    ):
        c.url, c.ws = api.url, api.ws_url
        c.http = httpx.Client(base_url=api.url, timeout=10)
        yield c
        c.http.close()


def test_a_token_attaches_and_drives_a_terminal_through_the_pod(cluster: Cluster) -> None:
    made = cluster.http.post(TOKENS, headers=cluster.jwt(), json={"name": "ci"})
    assert made.status_code == 201, made.text
    pat = made.json()["token"]
    h = {"Authorization": f"Bearer {pat}"}
    created = cluster.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    assert created.status_code == 201, created.text
    cluster.set_ready()
    url = f"{cluster.ws}{SESSIONS}/box/attach?access_token={pat}"

    async def scenario() -> None:
        async with asyncio.timeout(20), websockets.connect(url) as ws:
            seen = b""
            await ws.send("echo via-pat-$((6*7))\n")
            while b"via-pat-42" not in seen:
                frame = await ws.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()
            resized = cluster.http.post(
                f"{SESSIONS}/box/resize", headers=h, json={"rows": 31, "cols": 97}
            )
            assert resized.status_code == 204, resized.text
            await ws.send("stty size\n")
            while b"31 97" not in seen:
                frame = await ws.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()

    asyncio.run(scenario())
    listed = cluster.http.get(f"{SESSIONS}/box/terminals", headers=h)
    assert listed.status_code == 200 and listed.json()["terminals"], listed.text


class _Conn:
    """The bits of a request ``upstream_token`` reads."""

    def __init__(self, deps: Any, principal: Principal, token: str, kind: str) -> None:
        self.app = type("App", (), {"state": type("State", (), {"deps": deps})()})()
        self.state = type("State", (), {"principal": principal, "token": token})()
        self.scope = {"type": kind}


def test_the_exchanged_jwt_is_short_and_an_external_issuer_refuses(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", store="memory")
    deps = build_api(settings)
    pat = "osb_pat_" + "a" * 43
    who = Principal(
        sub="u-1",
        email="dev@acme.com",
        org="acme",
        roles=frozenset({"org-admin"}),
        tier="team",
        groups=("g",),
        username="dev",
        expires_at=None,
        via_token="0" * 16,
    )
    minted = upstream_token(_Conn(deps, who, pat, "http"))  # type: ignore[arg-type]
    claims = asyncio.run(deps.authenticator.inner.validator.validate(minted))
    assert claims["exp"] - claims["iat"] == UPSTREAM_JWT_SECONDS
    assert (
        claims["sub"],
        claims["email"],
        claims["org_id"] if "org_id" in claims else claims["org"],
    ) == (
        "u-1",
        "dev@acme.com",
        "acme",
    )
    assert claims["realm_access"]["roles"] == ["org-admin"] and claims["groups"] == ["g"]
    # never past the token's own expiry
    import time

    soon = replace(who, expires_at=time.time() + 20)
    claims = asyncio.run(
        deps.authenticator.inner.validator.validate(
            upstream_token(_Conn(deps, soon, pat, "http"))  # type: ignore[arg-type]
        )
    )
    assert claims["exp"] - claims["iat"] <= 20
    # an attach's lives as long as the connection may (the control plane ends it)
    attach = upstream_token(_Conn(deps, who, pat, "websocket"))  # type: ignore[arg-type]
    claims = asyncio.run(deps.authenticator.inner.validator.validate(attach))
    assert claims["exp"] - claims["iat"] == UPSTREAM_ATTACH_SECONDS
    # a JWT passes unchanged
    assert upstream_token(_Conn(deps, replace(who, via_token=""), "a.b.c", "http")) == "a.b.c"  # type: ignore[arg-type]
    # with an external issuer there is none to mint from
    deps.issuer = None
    with pytest.raises(Forbidden) as refused:
        upstream_token(_Conn(deps, who, pat, "http"))  # type: ignore[arg-type]
    assert refused.value.code == "token-not-allowed"
    assert upstream_token(_Conn(deps, who, pat, "websocket")) == pat  # type: ignore[arg-type]


def test_quotas_hold_in_kubernetes_mode_too(tmp_path: Path) -> None:
    """The control plane of Kubernetes mode counts sandboxes and connections; terminals
    run in the pods, so their usage is not counted here (null)."""
    settings = load_settings(
        data_dir=tmp_path / "data", quota_user="sandboxes=1", agents_path=str(tmp_path / "a")
    )
    (tmp_path / "a").write_text(json.dumps([{"slug": "aider", "binary": "/bin/sh"}]))
    issuer = EmbeddedIssuer.load_or_create(tmp_path / "data")
    h = {"Authorization": f"Bearer {issuer.mint(sub='u-1', email='dev@acme.com', org='acme')}"}
    with (
        serve_in_thread(create_app(build_api(settings))) as api,
        httpx.Client(base_url=api.url, timeout=10) as http,
    ):
        first = http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "one"})
        assert first.status_code == 201, first.text
        second = http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "two"})
        assert second.status_code == 429 and second.json()["error"] == "quota-exceeded"
        usage = http.get("/api/v1/sandbox/quotas", headers=h).json()["user"]["usage"]
        assert usage == {
            "sandboxes": 1,
            "terminals": None,
            "websockets": 0,
            "waitingAttaches": 0,
        }
