"""A sandbox pod checks the audience the control plane checks (docs/auth.md, "Kubernetes
mode's sandbox pods"): with ``SANDBOX_OIDC_AUDIENCE`` set, the operator gives the pod
that audience and the console client's id (the audience of the ID tokens the control
plane relays for console sessions), and the pod refuses a token of the same issuer
minted for another audience, as the control plane does.

Real parts: an issuer serving its JWKS over HTTP with RS256-signed tokens; the control
plane (``sandbox api``'s composition) over SQLite; a real ``sandbox pty-server`` process
started with the environment the operator renders for the stored Sandbox (from the same
Settings), running a real shell in a real PTY; console sessions signed in on the same
session database the control plane reads, and relayed by it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from auth_idp import IssuerServer, jwks_of, token
from cryptography.hazmat.primitives.asymmetric import rsa
from test_pod_claim_mapping import close_code, edit_sandbox, pod_environment

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api, cookie_secret
from openova_sandbox.auth.authenticator import build_authenticator
from openova_sandbox.auth.cookie import COOKIE_NAME, session_cookie
from openova_sandbox.auth.oidc_client import TokenSet
from openova_sandbox.auth.oidc_sessions import build_oidc_sessions
from openova_sandbox.config import Settings, load_settings
from openova_sandbox.controller.kube.operator import render_config
from openova_sandbox.domain.naming import namespace_for
from openova_sandbox.store.sql_oidc_sessions import SqlSessionBackend
from openova_sandbox.testing.server import free_port, serve_in_thread
from support.pod import pty_server

pytestmark = pytest.mark.timeout(120)
SESSIONS = "/api/v1/sandbox/sessions"
KID = "k1"
AUDIENCE = "sandbox-api"
CONSOLE = "sandbox-console"
OWNER = {"sub": "member-0001", "email": "dev@acme.com", "org_id": "acme"}


@dataclass
class World:
    idp: IssuerServer
    key: rsa.RSAPrivateKey
    settings: Settings
    api: str
    pod: str
    http: httpx.Client

    def token(self, **claims: Any) -> str:
        who = {k: v for k, v in OWNER.items() if k != "sub"}
        return token(self.key, kid=KID, sub=OWNER["sub"], iss=self.idp.url, **{**who, **claims})

    @staticmethod
    def bearer(tok: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tok}"}


def settings_for(tmp_path: Path, idp: IssuerServer, pty_port: int) -> Settings:
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"]}]))
    return load_settings(
        data_dir=tmp_path / "data",
        agents_path=str(agents),
        oidc_issuer=idp.url,
        oidc_audience=AUDIENCE,
        oidc_client_id=CONSOLE,
        kube_pty_url_template=f"http://127.0.0.1:{pty_port}",
    )


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
        created = http.post(
            SESSIONS,
            headers=w.bearer(w.token(aud=AUDIENCE)),
            json={"agent": "aider", "name": "box"},
        )
        assert created.status_code == 201, created.text
        namespace = namespace_for("acme", settings.default_namespace)

        async def ready(store: Any, current: Any) -> Any:
            status = replace(current.status, phase="Ready", extra={"workspaceNamespace": "ws"})
            await store.update_status(current.with_status(status))
            return await store.get(namespace, "box")

        stored = edit_sandbox(settings, namespace, "box", ready)
        env = pod_environment(settings, stored, tmp_path)
        assert (env["SANDBOX_OIDC_AUDIENCE"], env["SANDBOX_OIDC_CLIENT_ID"]) == (AUDIENCE, CONSOLE)
        with pty_server(env, pty_port) as pod:
            w.pod = pod
            yield w
        http.close()
    idp.stop()


def test_a_token_for_another_audience_is_refused_by_the_pod_as_by_the_control_plane(
    world: World,
) -> None:
    terminals = f"{SESSIONS}/box/terminals"
    for aud, admitted in (
        (AUDIENCE, True),
        ([f"{AUDIENCE}-not", AUDIENCE], True),  # a list naming ours
        ("another-app", False),  # the same issuer, minted for another application
        (f"{AUDIENCE}-not", False),
        (None, False),  # no audience at all
    ):
        tok = world.token(aud=aud) if aud is not None else world.token()
        api = world.http.get(terminals, headers=world.bearer(tok))
        pod = httpx.get(f"{world.pod}/sessions", headers=world.bearer(tok))
        assert (api.status_code == 200) is admitted, (aud, api.status_code, api.text)
        assert pod.status_code == (200 if admitted else 401), (aud, pod.text)

    async def attach(tok: str) -> int | None:
        url = world.pod.replace("http://", "ws://") + "/sessions/box/attach"
        async with websockets.connect(url, additional_headers=world.bearer(tok)) as ws:
            return await close_code(ws)

    # an attach straight at the pod (its route is published through the gateway)
    assert asyncio.run(attach(world.token(aud="another-app"))) == 1008


def test_the_console_clients_id_token_is_admitted_at_the_pod_only(world: World) -> None:
    # what the control plane relays for a console session whose access token is opaque
    # or does not name the audience: the ID token, audience our console client
    id_token = world.token(aud=CONSOLE)
    assert httpx.get(f"{world.pod}/sessions", headers=world.bearer(id_token)).status_code == 200
    # as a bearer at the API it is not a token for the API (the audience rule holds)
    got = world.http.get(f"{SESSIONS}/box/terminals", headers=world.bearer(id_token))
    assert got.status_code == 401
    # another client of the same issuer: refused at the pod too
    other = world.token(aud="someone-elses-console")
    assert httpx.get(f"{world.pod}/sessions", headers=world.bearer(other)).status_code == 401


def sign_in(world: World, access_token: str, id_token: str) -> tuple[str, str]:
    """A console session signed in on the control plane's session database, as its
    callback would store it: the cookie, and the token it relays for the session."""
    settings = world.settings
    secret = cookie_secret(settings)
    validate = build_authenticator(settings, issuer=None).validator.validate

    async def run() -> tuple[str, str]:
        backend = SqlSessionBackend(settings.effective_database_url)
        sessions = build_oidc_sessions(
            settings, cookie_secret=secret, validate_bearer=validate, backend=backend
        )
        assert sessions is not None
        await sessions.start()
        try:
            tokens = TokenSet(
                access_token=access_token,
                refresh_token="",
                id_token=id_token,
                expires_at=time.time() + 300,
            )
            # the claims the callback read from the (verified) ID token
            claims = _claims_of(id_token)
            sid, _ = await sessions.sign_in(tokens, claims, requested_org="acme")
            record = await sessions.load(sid)
            assert record is not None
            return session_cookie(sid, secret), sessions.relayed(record)
        finally:
            await sessions.stop()

    return asyncio.run(run())


def _claims_of(jwt_text: str) -> dict[str, Any]:
    import jwt

    claims: dict[str, Any] = jwt.decode(jwt_text, options={"verify_signature": False})
    return claims


@pytest.mark.parametrize(
    "access",
    ["keycloak-default", "with-audience", "opaque"],
)
def test_a_console_session_reaches_the_pod_with_a_token_it_admits(
    world: World, access: str
) -> None:
    id_token = world.token(aud=CONSOLE, azp=CONSOLE)
    access_token = {
        # Keycloak's access token without an audience mapper: aud "account"
        "keycloak-default": world.token(aud="account", azp=CONSOLE),
        "with-audience": world.token(aud=[AUDIENCE, "account"], azp=CONSOLE),
        "opaque": "opaque-access-token-0123456789",
    }[access]
    cookie, relayed = sign_in(world, access_token, id_token)
    assert relayed == (access_token if access == "with-audience" else id_token)
    cookies = {"Cookie": f"{COOKIE_NAME}={cookie}"}
    listed = world.http.get(f"{SESSIONS}/box/terminals", headers=cookies)
    assert listed.status_code == 200, listed.text
    opened = world.http.post(
        f"{SESSIONS}/box/terminals",
        headers={**cookies, "Origin": world.api},
        json={"agent": "aider"},
    )
    assert opened.status_code == 201, opened.text
    # and the pod saw it: the terminal is there when the owner's bearer lists it
    mine = httpx.get(f"{world.pod}/sessions", headers=world.bearer(world.token(aud=AUDIENCE)))
    assert opened.json()["id"] in mine.json()["sessions"]


def test_without_an_external_issuer_the_pod_checks_no_audience(tmp_path: Path) -> None:
    # the embedded issuer's tokens are not checked for an audience by the control
    # plane: the pod is given none either (it would refuse the control plane's own)
    settings = load_settings(data_dir=tmp_path / "data", oidc_audience=AUDIENCE)
    config = render_config(settings)
    assert (config.oidc_audience, config.oidc_client_id) == ("", "")
