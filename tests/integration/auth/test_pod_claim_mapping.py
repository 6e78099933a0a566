"""Kubernetes mode with a claim mapping that is not the default (docs/auth.md,
"Kubernetes mode's sandbox pods"): the org comes from a Keycloak-shaped ``organization``
list and org admins are a group (``/orgs/{org}/admins``), no realm role or tier.

Real parts: an issuer serving its JWKS over HTTP with RS256-signed tokens; the control
plane (``sandbox api``'s composition) over a SQLite store; a real ``sandbox pty-server``
process started with the environment the operator renders for the stored Sandbox (from
the same Settings), running a real shell in a real PTY. The control plane relays to it,
and the pod decides again: the org admin attaches to a member's terminal, another org's
admin is refused, a list claim is read for the org the control plane chose (relayed as
``X-Sandbox-Org``), and a realm role the mapping does not count admits no one at the pod
either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from auth_idp import IssuerServer, jwks_of, token
from cryptography.hazmat.primitives.asymmetric import rsa

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api
from openova_sandbox.config import Settings, load_settings
from openova_sandbox.controller.kube.operator import render_config
from openova_sandbox.controller.kube.render import render_children
from openova_sandbox.domain.naming import namespace_for
from openova_sandbox.store.sql import SqlStore
from openova_sandbox.testing.server import free_port, serve_in_thread
from support.pod import pty_server

pytestmark = pytest.mark.timeout(120)
SESSIONS = "/api/v1/sandbox/sessions"
KID = "k1"
MEMBER = {
    "sub": "member-0001",
    "email": "dev@acme.com",
    "organization": ["acme", "globex"],  # names two orgs: the request picks one
    "groups": ["/orgs/acme/devs"],
}
ACME_ADMIN = {
    "sub": "admin-0001",
    "email": "boss@acme.com",
    "organization": ["acme"],
    "groups": ["/orgs/acme/admins"],
}
GLOBEX_ADMIN = {
    "sub": "admin-0002",
    "email": "boss@globex.com",
    "organization": ["globex"],
    "groups": ["/orgs/globex/admins"],
}
# an admin by the default mapping's reading only (realm role, tier, org_id): this
# mapping counts none of them, so neither the control plane nor the pod may
ROLE_ONLY = {
    "sub": "member-0002",
    "email": "ops@acme.com",
    "org_id": "acme",
    "organization": ["acme"],
    "realm_access": {"roles": ["org-admin"]},
    "tier": "owner",
}


@dataclass
class World:
    idp: IssuerServer
    key: rsa.RSAPrivateKey
    settings: Settings
    api: str
    pod: str
    http: httpx.Client

    def token(self, who: dict[str, Any]) -> str:
        claims = {k: v for k, v in who.items() if k != "sub"}
        return token(self.key, kid=KID, sub=who["sub"], iss=self.idp.url, **claims)

    def headers(self, who: dict[str, Any], org: str | None = "acme") -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token(who)}"}
        return {**h, "X-Sandbox-Org": org} if org else h


def settings_for(tmp_path: Path, idp: IssuerServer, pty_port: int) -> Settings:
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"]}]))
    return load_settings(
        data_dir=tmp_path / "data",
        agents_path=str(agents),
        oidc_issuer=idp.url,
        oidc_org_claim="organization",
        oidc_admin_roles="",
        oidc_admin_groups="/orgs/{org}/admins",
        oidc_admin_tier="",
        kube_pty_url_template=f"http://127.0.0.1:{pty_port}",
    )


def edit_sandbox(settings: Settings, namespace: str, name: str, change: Any) -> Any:
    async def run() -> Any:
        store = SqlStore(settings.effective_database_url)
        await store.start()
        try:
            current = await store.get(namespace, name)
            return await change(store, current)
        finally:
            await store.close()

    return asyncio.run(run())


def pod_environment(settings: Settings, stored: Any, tmp_path: Path) -> dict[str, str]:
    """The pty-server container's env as the operator renders it for ``stored`` (the
    literal values; the Secrets' are not needed here), with the paths a pod has made
    local: its workspace, HOME and MCP config."""
    children = render_children(stored, "sandbox-ws", render_config(settings))
    (workload,) = [c for c in children if c["kind"] == "StatefulSet"]
    (container,) = [
        c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "pty-server"
    ]
    rendered = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for path in ("work", "home"):
        (tmp_path / path).mkdir(exist_ok=True)
    rendered.update(
        SANDBOX_WORKDIR=str(tmp_path / "work"),
        HOME=str(tmp_path / "home"),
        SANDBOX_MCP_CONFIG=str(tmp_path / "mcp.json"),
        OPENOVA_SANDBOX_AGENTS_PATH=settings.agents_path,
        SANDBOX_DATA_DIR=str(tmp_path / "pod-data"),
    )
    # this process's own settings stay out (the pod has only what was rendered)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "CATALYST_"))}
    return {**base, **rendered}


@pytest.fixture
def world(tmp_path: Path, rsa_keys: list[rsa.RSAPrivateKey]) -> Iterator[World]:
    idp = IssuerServer()
    key = rsa_keys[0]
    idp.jwks = jwks_of((key, KID))
    pty_port = free_port()
    settings = settings_for(tmp_path, idp, pty_port)
    with serve_in_thread(create_app(build_api(settings))) as api:
        http = httpx.Client(base_url=api.url, timeout=15)
        w = World(idp, key, settings, api.url, "", http)
        # the member creates the sandbox (for acme, of the two orgs its token names)
        created = http.post(
            SESSIONS, headers=w.headers(MEMBER), json={"agent": "aider", "name": "box"}
        )
        assert created.status_code == 201, created.text
        namespace = namespace_for("acme", settings.default_namespace)

        async def ready(store: Any, current: Any) -> Any:
            status = replace(current.status, phase="Ready", extra={"workspaceNamespace": "ws"})
            await store.update_status(current.with_status(status))
            return await store.get(namespace, "box")

        stored = edit_sandbox(settings, namespace, "box", ready)
        with pty_server(pod_environment(settings, stored, tmp_path), pty_port) as pod:
            w.pod = pod
            yield w
        http.close()
    idp.stop()


async def read_until(ws: Any, needle: bytes, timeout: float = 15.0) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            frame = await ws.recv()
            seen += frame if isinstance(frame, bytes) else frame.encode()
    return seen


async def close_code(ws: Any) -> int | None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(15):
            async for _ in ws:  # a raw viewer is told why before the close
                pass
    return ws.close_code


def attach_url(base: str, tok: str | None = None) -> str:
    url = base.replace("http://", "ws://") + f"{SESSIONS}/box/attach"
    return f"{url}?access_token={tok}" if tok else url


def test_the_org_admin_attaches_to_a_members_terminal_through_the_pod(world: World) -> None:
    async def scenario() -> None:
        # as `sandbox attach` does: the token in the URL, the org in X-Sandbox-Org
        member = attach_url(world.api, world.token(MEMBER))
        async with websockets.connect(member, additional_headers={"X-Sandbox-Org": "acme"}) as m:
            await m.send("echo member-$((3*4))\n")
            await read_until(m, b"member-12")
            admin = attach_url(world.api, world.token(ACME_ADMIN))
            async with websockets.connect(admin, additional_headers={"X-Sandbox-Org": "acme"}) as a:
                await a.send("echo admin-$((6*7))\n")
                await read_until(a, b"admin-42")
                await read_until(m, b"admin-42")  # the same terminal

    asyncio.run(scenario())


def test_a_list_claim_is_read_for_the_org_the_control_plane_chose(world: World) -> None:
    listed = world.http.get(f"{SESSIONS}/box/terminals", headers=world.headers(MEMBER))
    assert listed.status_code == 200, listed.text
    opened = world.http.post(
        f"{SESSIONS}/box/terminals", headers=world.headers(MEMBER), json={"agent": "aider"}
    )
    assert opened.status_code == 201, opened.text
    tid = opened.json()["id"]
    listed = world.http.get(f"{SESSIONS}/box/terminals", headers=world.headers(ACME_ADMIN))
    assert listed.status_code == 200, listed.text
    assert tid in {t["id"] for t in listed.json()["terminals"]}
    resized = world.http.post(
        f"{SESSIONS}/box/terminals/{tid}/resize",
        headers=world.headers(ACME_ADMIN),
        json={"rows": 20, "cols": 70},
    )
    assert resized.status_code == 204, resized.text
    closed = world.http.delete(f"{SESSIONS}/box/terminals/{tid}", headers=world.headers(MEMBER))
    assert closed.status_code == 204, closed.text
    # at the pod itself, the same token without the org it names two of is refused,
    # and with it admitted: the header is what carries the choice
    bare = world.headers(MEMBER, org=None)
    assert httpx.get(f"{world.pod}/sessions", headers=bare).status_code == 401
    chosen = httpx.get(f"{world.pod}/sessions", headers=world.headers(MEMBER))
    assert chosen.status_code == 200, chosen.text


def test_another_orgs_admin_is_refused_by_the_control_plane_and_the_pod(world: World) -> None:
    globex = world.headers(GLOBEX_ADMIN, org="globex")
    assert world.http.get(f"{SESSIONS}/box/terminals", headers=globex).status_code == 404
    # straight at the pod (its route is published through the gateway)
    assert httpx.get(f"{world.pod}/sessions", headers=globex).status_code == 403
    # asking for an org its token does not name is no way in either
    posing = world.headers(GLOBEX_ADMIN, org="acme")
    assert httpx.get(f"{world.pod}/sessions", headers=posing).status_code == 401

    async def scenario() -> None:
        relayed = attach_url(world.api, world.token(GLOBEX_ADMIN))
        async with websockets.connect(relayed, additional_headers={"X-Sandbox-Org": "globex"}) as c:
            assert await close_code(c) == 1008
        direct = world.pod.replace("http://", "ws://") + "/sessions/box/attach"
        async with websockets.connect(direct, additional_headers=globex) as c:
            assert await close_code(c) == 1008

    asyncio.run(scenario())


def test_a_role_the_mapping_does_not_count_admits_no_one_at_the_pod(world: World) -> None:
    # org-admin realm role, tier owner and org_id "acme": an admin by the default
    # mapping, which the pod would apply if it were not given this one
    h = world.headers(ROLE_ONLY)
    assert world.http.get(f"{SESSIONS}/box/terminals", headers=h).status_code == 404
    assert httpx.get(f"{world.pod}/sessions", headers=h).status_code == 403
    assert httpx.get(f"{world.pod}/sessions", headers=world.headers(ACME_ADMIN)).status_code == 200
