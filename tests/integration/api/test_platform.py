"""Login link, issuer documents, health/readiness/metrics, and a store that is down."""

from __future__ import annotations

import re

import httpx

from openova_sandbox.testing.server import free_port

SESSIONS = "/api/v1/sandbox/sessions"


def test_login_link_sets_the_cookie_once(api):
    link_token = api.deps.logins.login_link_token(
        sub="local-dev", email="dev@localhost", org="local", roles=["org-admin"]
    )
    with httpx.Client(base_url=api.url) as browser:
        resp = browser.get("/login", params={"token": link_token})
        assert resp.status_code == 303
        assert resp.headers["location"] == "/sandbox"
        cookie = resp.headers["set-cookie"]
        assert cookie.startswith("catalyst_session=")
        for attribute in ("HttpOnly", "SameSite=strict", "Max-Age=14400", "Path=/"):
            assert attribute.lower() in cookie.lower()
        # the cookie holds a fresh session token (signed), not the link's token
        assert link_token not in cookie
        who = browser.get("/api/v1/sandbox/whoami").json()
        assert who.pop("isolation")["mode"] in ("bwrap", "none")  # embedded mode (issue 12)
        assert who == {
            "sub": "local-dev",
            "email": "dev@localhost",
            "org": "local",
            "orgAdmin": True,
        }
    # a second use of the same link is refused
    with httpx.Client(base_url=api.url) as other:
        again = other.get("/login", params={"token": link_token})
        assert again.status_code == 401
        assert "catalyst_session" not in again.headers.get("set-cookie", "")
        assert other.get("/login", params={"token": "nonsense"}).status_code == 401


def test_plain_tokens_log_in_after_a_confirmation_on_our_page(api):
    token = api.token()
    with httpx.Client(base_url=api.url) as browser:
        # a token that is not a login link's: the page says whom it signs in as ...
        shown = browser.get("/login", params={"token": token})
        assert shown.status_code == 200
        # only the form's nonce cookie is set, not a session
        assert "catalyst_session" not in shown.headers.get("set-cookie", "")
        assert "Sign in as dev@acme.com" in shown.text
        # the form's POST carries this origin (no-referrer would make it "null")
        assert shown.headers["referrer-policy"] == "same-origin"
        assert browser.get(SESSIONS).status_code == 401  # not signed in yet
        # ... and its form, posted from this server's page, signs in
        form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', shown.text))
        assert set(form) == {"token", "nonce", "next"}
        # (a browser sends its Origin itself: tests/e2e/test_sign_in_e2e.py)
        confirmed = browser.post("/login", data=form, headers={"Origin": api.url})
        assert confirmed.status_code == 303
        assert browser.get(SESSIONS).status_code == 200


def test_the_confirmation_needs_its_pages_nonce(api):
    token = api.token()
    with httpx.Client(base_url=api.url) as browser:
        shown = browser.get("/login", params={"token": token})
        form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', shown.text))
    # another browser (no nonce cookie), even from this origin and with the form's values
    with httpx.Client(base_url=api.url) as other:
        refused = other.post("/login", data=form, headers={"Origin": api.url})
        assert refused.status_code == 403
        assert "catalyst_session" not in refused.headers.get("set-cookie", "")
    # the same browser with a wrong nonce, or from an opaque origin ("null")
    with httpx.Client(base_url=api.url) as browser:
        page = browser.get("/login", params={"token": token})
        own = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.text))
        wrong = {**own, "nonce": "guessed"}
        assert browser.post("/login", data=wrong, headers={"Origin": api.url}).status_code == 403
        null = browser.post("/login", data=own, headers={"Origin": "null"})
        assert null.status_code == 403
        assert browser.get(SESSIONS).status_code == 401
        # what the page itself posts works
        assert browser.post("/login", data=own, headers={"Origin": api.url}).status_code == 303


def test_a_sign_in_form_posted_from_elsewhere_is_refused(api):
    with httpx.Client(base_url=api.url) as browser:
        answer = browser.post(
            "/login", data={"token": api.token()}, headers={"Origin": "https://evil.example"}
        )
        assert answer.status_code == 403
        assert "set-cookie" not in answer.headers
        assert browser.get(SESSIONS).status_code == 401


def test_issuer_documents(api):
    config = api.http.get("/.well-known/openid-configuration").json()
    assert config["issuer"] == api.issuer.issuer
    assert config["jwks_uri"] == f"{api.url}/.well-known/jwks.json"
    keys = api.http.get("/.well-known/jwks.json").json()["keys"]
    assert [k["kid"] for k in keys] == [api.issuer.kid]
    assert all("d" not in k for k in keys)  # never the private part


def test_health_readiness_metrics(api):
    assert api.http.get("/healthz").text == "ok"
    assert api.http.get("/readyz").status_code == 200
    api.http.get(SESSIONS, headers=api.auth())
    api.http.get(SESSIONS)
    text = api.http.get("/metrics").text
    assert (
        'sandbox_http_requests_total{method="GET",route="/api/v1/sandbox/sessions",status="200"} 1.0'
        in text
    )
    assert 'route="/api/v1/sandbox/sessions",status="401"' in text
    assert "sandbox_http_request_duration_seconds_bucket" in text
    assert "pty_server_sessions" in text


def test_request_ids(api):
    resp = api.http.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    assert len(api.http.get("/healthz").headers["x-request-id"]) == 32


def test_unreachable_store_answers_503(make_api):
    dead = f"postgresql+asyncpg://nobody:x@127.0.0.1:{free_port()}/nothing"
    api = make_api(database_url=dead)
    h = api.auth()
    for method, path, body in (
        ("GET", SESSIONS, None),
        ("POST", SESSIONS, {"agent": "aider"}),
        ("GET", f"{SESSIONS}/x", None),
        ("DELETE", f"{SESSIONS}/x", None),
    ):
        resp = api.http.request(method, path, headers=h, json=body)
        assert resp.status_code == 503, (method, path, resp.text)
        assert resp.headers["retry-after"] == "30"
        assert resp.json()["error"] == "sandbox-backend-unavailable"
        assert resp.json()["detail"]
    ready = api.http.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["retry-after"] == "30"
    assert api.http.get("/healthz").status_code == 200


def test_console_is_served_or_explains_itself(api):
    root = api.http.get("/", follow_redirects=False)
    assert root.status_code == 307
    assert root.headers["location"] == "/sandbox"
    page = api.http.get("/sandbox/some-session-id")
    assert page.status_code in (200, 503)
    assert "<html" in page.text.lower() or "<!doctype html>" in page.text.lower()
    # odd paths get the console page too, never a 500
    for odd in ("%00", "x" * 5000, "a%00b/c"):
        assert api.http.get(f"/sandbox/{odd}").status_code == page.status_code, odd


def test_json_nested_too_deeply_is_a_400(api):
    answer = api.http.post(SESSIONS, headers=api.auth(), content="[" * 30_000)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid-json"


def test_a_login_link_token_is_not_an_api_credential(api):
    link_token = api.deps.logins.login_link_token(
        sub="local-dev", email="dev@localhost", org="local", roles=["org-admin"]
    )
    headers = {"Authorization": f"Bearer {link_token}"}
    assert api.http.get(SESSIONS, headers=headers).status_code == 401
    assert api.http.get(SESSIONS, params={"access_token": link_token}).status_code == 401
    # it still opens /login, once
    with httpx.Client(base_url=api.url) as browser:
        assert browser.get("/login", params={"token": link_token}).status_code == 303
        assert browser.get(SESSIONS).status_code == 200  # with the session cookie


def test_a_new_data_dir_and_the_cookie_secret_are_private(tmp_path):
    import stat

    from openova_sandbox.api.composition import build_control_plane, cookie_secret
    from openova_sandbox.config import load_settings

    settings = load_settings(data_dir=tmp_path / "fresh", store="memory")
    build_control_plane(settings)
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o700
    secret_file = tmp_path / "fresh" / "cookie-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret_file.chmod(0o644)  # e.g. restored from a backup
    assert cookie_secret(settings) == secret_file.read_text().strip()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600


def test_the_cookie_is_secure_when_the_public_url_is_https(make_api):
    api = make_api(store="memory", public_url="https://sandbox.acme.example")
    link = api.deps.logins.login_link_token(sub="u", email="u@acme.com", org="acme", roles=[])
    with httpx.Client(base_url=api.url) as browser:  # plain http, as behind a TLS proxy
        answer = browser.get("/login", params={"token": link})
    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower()


def test_request_bodies_are_capped(api):
    big = b'{"agent": "aider", "name": "' + b"x" * 70_000 + b'"}'
    declared = api.http.post(SESSIONS, headers=api.auth(), content=big)
    assert declared.status_code == 413
    assert declared.json()["error"] == "request-too-large"

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b" " * 8192

    streamed = api.http.post(SESSIONS, headers=api.auth(), content=chunks())
    assert streamed.status_code == 413
    assert api.http.get(SESSIONS, headers=api.auth()).json()["sandboxes"] == []
