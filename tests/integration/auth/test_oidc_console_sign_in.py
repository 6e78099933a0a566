"""Console sign-in with an external OIDC issuer (issue 11), against a real provider
process (``oidc-provider-mock``, tests/support/oidc_idp.py) and a real server on HTTP:
authorization code + PKCE, state and nonce, the server-side session and its refresh,
Keycloak-shaped claims (an org list, realm roles, groups), logout at the issuer."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets
from structlog.testing import capture_logs

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.auth.oidc_sessions import CACHE_SECONDS
from openova_sandbox.config import load_settings
from openova_sandbox.store.sql_oidc_sessions import SqlSessionBackend
from openova_sandbox.testing.server import serve_in_thread
from support.oidc_idp import OidcIdp

KEYCLOAK_ALICE = {
    "email": "alice@acme.test",
    "preferred_username": "alice",
    "organization": ["acme", "globex"],
    "realm_access": {"roles": ["offline_access", "org-admin"]},
    "groups": ["/orgs/acme/admins", "/orgs/globex"],
}


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcIdp]:
    provider = OidcIdp("--revocation", "--access-ttl", "60")
    try:
        yield provider
    finally:
        provider.stop()


class Server:
    def __init__(self, url: str, deps: Any) -> None:
        self.url = url
        self.deps = deps
        self.offset = 0.0  # seconds added to the sessions' clock (no sleeping for expiry)
        deps.oidc_sessions._clock = lambda: time.time() + self.offset

    def browser(self) -> httpx.Client:
        # what a browser sends on a same-origin fetch: its Origin
        return httpx.Client(base_url=self.url, headers={"Origin": self.url}, timeout=15)


@pytest.fixture(autouse=True)
def unisolated(monkeypatch: pytest.MonkeyPatch) -> None:
    # an external issuer means several users: this machine cannot isolate sandboxes
    # (no user namespaces), and these tests run none
    monkeypatch.setenv("SANDBOX_ISOLATION", "none")


def record_of(deps: Any, sid: str) -> Any:
    return asyncio.run(deps.oidc_sessions.load(sid))


def serve(idp: OidcIdp, tmp_path: Path, *, store: str = "memory", **mapping: str) -> Any:
    settings = load_settings(
        data_dir=tmp_path / "data",
        store=store,
        oidc_issuer=idp.url,
        oidc_client_id="sandbox-console",
        oidc_client_secret="console-secret",
        **mapping,
    )
    deps = build_embedded(settings)
    return serve_in_thread(create_app(deps)), deps


def sign_in(server: Server, idp: OidcIdp, browser: httpx.Client, sub: str, **query: str):
    """The browser's round trip: our start → the provider's form → our callback."""
    start = browser.get("/auth/oidc/start", params={"next": "/sandbox/s1", **query})
    assert start.status_code == 303
    authorize = start.headers["location"]
    params = parse_qs(urlsplit(authorize).query)
    assert params["code_challenge_method"] == ["S256"]
    assert params["client_id"] == ["sandbox-console"]
    assert params["redirect_uri"] == [server.url + "/auth/oidc/callback"]
    assert len(params["state"][0]) >= 43 and len(params["nonce"][0]) >= 43
    back = idp.authorize(authorize, sub)
    assert back.startswith(server.url + "/auth/oidc/callback?")
    return browser.get(back.removeprefix(server.url)), params


def test_sign_in_keycloak_shaped_claims_session_and_logout(idp: OidcIdp, tmp_path: Path):
    idp.set_user("alice", **KEYCLOAK_ALICE)
    running, deps = serve(idp, tmp_path, oidc_org_claim="organization")
    with running as http:
        server = Server(http.url, deps)
        with server.browser() as browser:
            done, _ = sign_in(server, idp, browser, "alice", org="globex")
            assert done.status_code == 303, done.text
            assert done.headers["location"] == "/sandbox/s1"
            cookie = browser.cookies.get("catalyst_session")
            assert cookie is not None and cookie.startswith("oidc:")
            set_cookie = done.headers.get_list("set-cookie")
            session_line = next(c for c in set_cookie if c.startswith("catalyst_session="))
            assert "HttpOnly" in session_line and "SameSite=strict" in session_line
            me = browser.get("/api/v1/sandbox/whoami")
            assert me.status_code == 200, me.text
            assert {k: me.json()[k] for k in ("sub", "email", "org", "orgAdmin")} == {
                "sub": "alice",
                "email": "alice@acme.test",
                "org": "globex",
                "orgAdmin": True,  # realm role org-admin
            }
            # what is stored: one record under the id's digest, nothing in clear
            sid = cookie.removeprefix("oidc:").split(":")[0]
            stored = deps.oidc_sessions.backend.records
            assert list(stored) == [hashlib.sha256(sid.encode()).hexdigest()]
            raw = stored[hashlib.sha256(sid.encode()).hexdigest()][0]
            record = record_of(deps, sid)
            assert record.refresh_token and record.refresh_token.encode() not in raw
            assert b"alice@acme.test" not in raw and record.id_token.encode() not in raw
            # the sign-in is in the org's audit log
            audit = browser.get("/api/v1/sandbox/audit")
            assert audit.status_code == 200, audit.text
            assert '"auth.sign-in"' in audit.text and '"oidc"' in audit.text
            # a tampered cookie is a 401 and is cleared
            forged = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
            bad = httpx.get(
                server.url + "/api/v1/sandbox/whoami",
                headers={"Cookie": f"catalyst_session={forged}"},
            )
            assert bad.status_code == 401
            assert 'catalyst_session=""' in bad.headers["set-cookie"]
            # a change with the session cookie from another origin is refused
            cross = browser.post(
                "/api/v1/sandbox/login-links", headers={"Origin": "http://evil.test"}
            )
            assert cross.status_code == 403

            # the access token is refreshed before it expires, and the session goes on
            before = idp.stats()["grants"].get("refresh_token", 0)
            server.offset = 50  # 10 s left of 60: inside the refresh margin
            assert browser.get("/api/v1/sandbox/whoami").status_code == 200
            assert idp.stats()["grants"]["refresh_token"] == before + 1
            assert browser.get("/api/v1/sandbox/whoami").status_code == 200
            assert idp.stats()["grants"]["refresh_token"] == before + 1  # not again

            # logout: ended here, refresh token revoked, the issuer's end-session URL
            revoked = idp.stats()["revoked"]
            out = browser.post("/logout")
            assert out.status_code == 200
            url = out.json()["logoutUrl"]
            assert url.startswith(idp.url + "/oauth2/end_session?")
            query = parse_qs(urlsplit(url).query)
            assert query["post_logout_redirect_uri"] == [server.url + "/sandbox"]
            assert query["id_token_hint"][0].count(".") == 2
            assert idp.stats()["revoked"] == revoked + 1
            assert deps.oidc_sessions.backend.records == {}
            again = httpx.get(
                server.url + "/api/v1/sandbox/whoami",
                headers={"Cookie": f"catalyst_session={cookie}"},
            )
            assert again.status_code == 401


def test_an_org_list_without_a_choice_is_a_401_page_offering_each(idp, tmp_path):
    idp.set_user("bob", **{**KEYCLOAK_ALICE, "email": "bob@acme.test"})
    running, deps = serve(idp, tmp_path, oidc_org_claim="organization")
    with running as http, Server(http.url, deps).browser() as browser:
        server = Server(http.url, deps)
        page, _ = sign_in(server, idp, browser, "bob")
        assert page.status_code == 401
        assert page.headers["content-type"].startswith("text/html")
        assert "names 2 organization(s), not a string (acme, globex)" in page.text
        assert 'href="/auth/oidc/start?org=acme&amp;next=%2Fsandbox%2Fs1"' in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert browser.cookies.get("catalyst_session") is None
        assert deps.oidc_sessions.backend.records == {}  # nothing stored for a refusal
        # an org the token does not name is refused too
        page, _ = sign_in(server, idp, browser, "bob", org="initech")
        assert page.status_code == 401
        assert (
            "is not among those the token&#x27;s organization claim names: acme, globex"
            in page.text
            and "initech" in page.text
        )


def test_a_number_org_claim_is_refused(idp, tmp_path):
    idp.set_user("carol", email="carol@acme.test", org_id=42)
    running, deps = serve(idp, tmp_path)
    with running as http, Server(http.url, deps).browser() as browser:
        page, _ = sign_in(Server(http.url, deps), idp, browser, "carol")
        assert page.status_code == 401
        assert "org_id claim is a number, not a string" in page.text


def test_groups_and_admin_group_mapping(idp, tmp_path):
    idp.set_user(
        "dave",
        email="dave@acme.test",
        groups=["/orgs/acme/admins", "/staff"],
        realm_access={"roles": []},
    )
    running, deps = serve(
        idp,
        tmp_path,
        oidc_org_group_prefix="/orgs/",
        oidc_admin_groups="/orgs/{org}/admins",
    )
    with running as http, Server(http.url, deps).browser() as browser:
        done, _ = sign_in(Server(http.url, deps), idp, browser, "dave")
        assert done.status_code == 303, done.text
        me = browser.get("/api/v1/sandbox/whoami").json()
        assert (me["org"], me["orgAdmin"]) == ("acme", True)


def test_state_and_flow_are_checked(idp, tmp_path):
    idp.set_user("erin", email="erin@acme.test", org_id="acme")
    running, deps = serve(idp, tmp_path)
    with running as http:
        server = Server(http.url, deps)
        with server.browser() as browser:
            start = browser.get("/auth/oidc/start")
            back = idp.authorize(start.headers["location"], "erin")
            code = parse_qs(urlsplit(back).query)["code"][0]
            wrong = browser.get("/auth/oidc/callback", params={"code": code, "state": "x" * 43})
            assert wrong.status_code == 401
            assert "state does not match" in wrong.text
        # another browser (no flow cookie) presenting a good code and state: refused
        with server.browser() as other:
            start = other.get("/auth/oidc/start")
            back = idp.authorize(start.headers["location"], "erin")
        with server.browser() as victim:
            stolen = victim.get(back.removeprefix(server.url))
            assert stolen.status_code == 401
            assert "did not start this sign-in" in stolen.text
            assert victim.cookies.get("catalyst_session") is None
        with server.browser() as browser:
            bad_org = browser.get("/auth/oidc/start", params={"org": "acme\x07"})
            assert bad_org.status_code == 400 and "control characters" in bad_org.text
            assert browser.get("/auth/oidc/callback").status_code == 400
            denied = browser.get(
                "/auth/oidc/callback", params={"error": "access_denied", "state": "s"}
            )
            assert denied.status_code == 401 and "access_denied" in denied.text


def test_concurrent_requests_share_one_refresh(idp, tmp_path):
    idp.set_user("ivy", email="ivy@acme.test", org_id="acme")
    running, deps = serve(idp, tmp_path)
    with running as http:
        server = Server(http.url, deps)
        with server.browser() as browser:
            sign_in(server, idp, browser, "ivy")
            cookie = browser.cookies["catalyst_session"]
        before = idp.stats()["grants"].get("refresh_token", 0)
        server.offset = 50
        headers = {"Cookie": f"catalyst_session={cookie}"}
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda _: (
                        httpx.get(
                            server.url + "/api/v1/sandbox/whoami", headers=headers, timeout=15
                        ).status_code
                    ),
                    range(8),
                )
            )
        assert answers == [200] * 8
        assert idp.stats()["grants"]["refresh_token"] == before + 1


def test_no_secret_of_the_flow_is_logged(idp, tmp_path):
    idp.set_user("jack", email="jack@acme.test", org_id="acme")
    running, deps = serve(idp, tmp_path)
    with running as http, capture_logs() as events:
        server = Server(http.url, deps)
        with server.browser() as browser:
            _, params = sign_in(server, idp, browser, "jack")
            cookie = browser.cookies["catalyst_session"]
            sid = cookie.removeprefix("oidc:").split(":")[0]
            first = record_of(deps, sid)
            server.offset = 50
            assert browser.get("/api/v1/sandbox/whoami").status_code == 200
            second = record_of(deps, sid)
            assert browser.post("/logout").status_code == 200
    assert any(e["event"] == "auth.oidc.refreshed" for e in events)
    logged = repr(events)
    secrets = {
        "session id": sid,
        "state": params["state"][0],
        "nonce": params["nonce"][0],
        "access token": first.access_token,
        "refresh token": first.refresh_token,
        "new refresh token": second.refresh_token,
        "ID token": first.id_token,
        "ID token signature": first.id_token.rsplit(".", 1)[1],
    }
    assert [name for name, value in secrets.items() if value in logged] == []


def test_a_refused_refresh_ends_the_session(idp, tmp_path):
    idp.set_user("frank", email="frank@acme.test", org_id="acme")
    running, deps = serve(idp, tmp_path)
    with running as http:
        server = Server(http.url, deps)
        with server.browser() as browser:
            done, _ = sign_in(server, idp, browser, "frank")
            assert done.status_code == 303
            httpx.post(f"{idp.url}/users/frank/revoke-tokens").raise_for_status()
            server.offset = 55
            gone = browser.get("/api/v1/sandbox/whoami")
            assert gone.status_code == 401
            assert 'catalyst_session=""' in gone.headers["set-cookie"]


def test_bearer_id_token_with_an_org_list_needs_x_sandbox_org(idp, tmp_path):
    """The CLI's case: the issuer's token as a bearer; a token naming several orgs is
    used for the one the request asks for."""
    idp.set_user("gina", **{**KEYCLOAK_ALICE, "email": "gina@acme.test"})
    running, deps = serve(idp, tmp_path, oidc_org_claim="organization")
    with running as http:
        server = Server(http.url, deps)
        with server.browser() as browser:
            sign_in(server, idp, browser, "gina", org="acme")
            sid = browser.cookies["catalyst_session"].removeprefix("oidc:").split(":")[0]
            id_token = record_of(deps, sid).id_token
        plain = {"Authorization": f"Bearer {id_token}"}
        refused = httpx.get(server.url + "/api/v1/sandbox/whoami", headers=plain)
        assert refused.status_code == 401
        assert "say which one to use" in refused.json()["detail"]
        chosen = httpx.get(
            server.url + "/api/v1/sandbox/whoami", headers={**plain, "X-Sandbox-Org": "acme"}
        )
        assert chosen.status_code == 200 and chosen.json()["org"] == "acme"


def test_without_end_session_logout_is_local(tmp_path):
    idp = OidcIdp("--no-end-session")
    try:
        idp.set_user("hank", email="hank@acme.test", org_id="acme")
        running, deps = serve(idp, tmp_path)
        with running as http:
            server = Server(http.url, deps)
            with server.browser() as browser:
                sign_in(server, idp, browser, "hank")
                assert browser.get("/api/v1/sandbox/whoami").status_code == 200
                out = browser.post("/logout")
                assert out.status_code == 204
                assert browser.get("/api/v1/sandbox/whoami").status_code == 401
    finally:
        idp.stop()


def test_auth_config_offers_sign_in(idp, tmp_path):
    running, _ = serve(idp, tmp_path)
    with running as http:
        config = httpx.get(http.url + "/api/v1/sandbox/auth/config").json()
        assert config["oidcConfigured"] is True
        assert config["signInUrl"] == "/auth/oidc/start"
        # the console's client has a secret: not one for the CLI
        assert "cliClientId" not in config
    public = load_settings(
        data_dir=tmp_path / "public", store="memory", oidc_issuer=idp.url, oidc_client_id="pub"
    )
    with serve_in_thread(create_app(build_embedded(public))) as http:
        config = httpx.get(http.url + "/api/v1/sandbox/auth/config").json()
        assert (config["cliClientId"], config["scopes"]) == ("pub", "openid email profile")


def test_sessions_on_sqlite_survive_a_restart_and_hold_no_token_in_clear(idp, tmp_path):
    """The default store: sessions in the data dir's SQLite database, where another
    process (a restart, another replica on that database) finds them."""
    idp.set_user("kim", email="kim@acme.test", org_id="acme")
    running, deps = serve(idp, tmp_path, store="sql")
    with running as http:
        server = Server(http.url, deps)
        with server.browser() as browser:
            done, _ = sign_in(server, idp, browser, "kim")
            assert done.status_code == 303, done.text
            cookie = browser.cookies["catalyst_session"]
            assert browser.get("/api/v1/sandbox/whoami").json()["email"] == "kim@acme.test"
            sid = cookie.removeprefix("oidc:").split(":")[0]
    database = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("sandbox.db*"))
    assert hashlib.sha256(sid.encode()).hexdigest().encode() in database
    assert sid.encode() not in database
    # what the row holds, read back through a second handle on the database
    url = load_settings(data_dir=tmp_path / "data", store="sql").effective_database_url

    async def stored() -> Any:
        deps.oidc_sessions.backend = SqlSessionBackend(url)
        try:
            return await deps.oidc_sessions.load(sid, fresh=True)
        finally:
            await deps.oidc_sessions.backend.close()

    record = asyncio.run(stored())
    assert record is not None and record.sub == "kim"
    for secret in (record.refresh_token, record.id_token, record.access_token):
        assert secret and secret.encode() not in database
    # two servers on that database at once (a restart; two replicas): both know the
    # session, and a logout through one ends it for the other within CACHE_SECONDS
    running_a, _ = serve(idp, tmp_path, store="sql")
    running_b, _ = serve(idp, tmp_path, store="sql")
    with running_a as a, running_b as b:

        def whoami(server: Any) -> int:
            headers = {"Cookie": f"catalyst_session={cookie}", "Origin": server.url}
            return httpx.get(server.url + "/api/v1/sandbox/whoami", headers=headers).status_code

        assert (whoami(a), whoami(b)) == (200, 200)
        headers = {"Cookie": f"catalyst_session={cookie}", "Origin": b.url}
        assert httpx.post(b.url + "/logout", headers=headers).status_code == 200
        assert whoami(b) == 401
        deadline = time.monotonic() + CACHE_SECONDS + 3
        while whoami(a) == 200:  # each answer is the wait: a's copy is at most 2 s old
            assert time.monotonic() < deadline, "the other server still admits the session"


def test_a_terminal_of_a_console_session_closes_at_sign_out(idp, tmp_path):
    """A WebSocket opened with the session cookie ends when the session does (1008
    signed-out), at once through this server."""
    idp.set_user("lee", email="lee@acme.test", org_id="acme")
    running, deps = serve(idp, tmp_path)
    with running as http:
        server = Server(http.url, deps)
        with server.browser() as browser:
            sign_in(server, idp, browser, "lee")
            cookie = browser.cookies["catalyst_session"]
            made = browser.post("/api/v1/sandbox/sessions", json={"agent": "shell", "name": "so"})
            assert made.status_code == 201, made.text
            deadline = time.monotonic() + 30
            while browser.get("/api/v1/sandbox/sessions/so").json().get("phase") != "Ready":
                assert time.monotonic() < deadline, "sandbox not ready"

            async def attach_then_sign_out() -> tuple[int | None, str, float]:
                url = http.url.replace("http://", "ws://") + "/api/v1/sandbox/sessions/so/attach"
                headers = {"Cookie": f"catalyst_session={cookie}", "Origin": http.url}
                async with (
                    asyncio.timeout(20),
                    websockets.connect(url, additional_headers=headers) as ws,
                ):
                    await ws.send(b"echo live-$((4*4))\n")
                    seen = b""
                    while b"live-16" not in seen:
                        frame = await ws.recv()
                        seen += frame if isinstance(frame, bytes) else frame.encode()
                    async with httpx.AsyncClient(base_url=http.url) as client:
                        out = await client.post("/logout", headers=headers)
                    assert out.status_code == 200
                    signed_out = time.monotonic()
                    with contextlib.suppress(websockets.ConnectionClosed):
                        async for _ in ws:
                            pass
                    return ws.close_code, ws.close_reason or "", time.monotonic() - signed_out

            code, reason, after = asyncio.run(attach_then_sign_out())
    assert (code, reason) == (1008, "signed-out")
    assert after < 2  # at once, not at the next look at the database
