"""Changes made with the session cookie must come from this server's own pages."""

from __future__ import annotations

import httpx

SESSIONS = "/api/v1/sandbox/sessions"


def signed_in(api) -> httpx.Client:
    link = api.deps.logins.login_link_token(sub="u-1", email="dev@acme.com", org="acme", roles=[])
    browser = httpx.Client(base_url=api.url)
    assert browser.get("/login", params={"token": link}).status_code == 303
    return browser


def test_a_cookie_post_from_another_origin_is_refused(api):
    browser = signed_in(api)
    try:
        host = api.url.split("://", 1)[1]
        port = int(host.rsplit(":", 1)[1])
        sibling = f"http://127.0.0.1:{port + 1}"  # same site, another origin
        refused = browser.post(
            SESSIONS,
            content='{"agent": "aider", "name": "csrf"}',
            headers={"Content-Type": "text/plain", "Origin": sibling},
        )
        assert refused.status_code == 403
        assert refused.json()["error"] == "cross-origin-request"
        assert browser.get(f"{SESSIONS}/csrf").status_code == 404  # nothing was made
        # reading is not a change
        assert browser.get(SESSIONS, headers={"Origin": sibling}).status_code == 200
        # the server's own pages, and clients that send no Origin, may change things
        own = browser.post(
            SESSIONS, json={"agent": "aider", "name": "mine"}, headers={"Origin": api.url}
        )
        assert own.status_code == 201
        assert browser.delete(f"{SESSIONS}/mine").status_code == 204
    finally:
        browser.close()


def test_a_bearer_token_is_not_a_cookie_and_passes(api):
    answer = api.http.post(
        SESSIONS,
        json={"agent": "aider", "name": "scripted"},
        headers={**api.auth(), "Origin": "https://elsewhere.example"},
    )
    assert answer.status_code == 201
