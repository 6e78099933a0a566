"""Operator policy over real HTTP: disabled, setup pending and configured, route by route."""

from __future__ import annotations

import pytest
from byos_provider import BYOS, CLIENT_ID

DISABLED = {"error": "byos disabled by operator policy"}


@pytest.mark.parametrize("value", ["false", "0", "no", "yes", "off"])
def test_disabled_answers_status_without_auth(make_api, value):
    api = make_api(store="memory", byos_claude_code_enabled=value)
    answer = api.http.get(f"{BYOS}/status")
    assert answer.status_code == 200
    assert answer.json() == {"connected": False, "disabled": True, "client_id_pending": True}


def test_disabled_with_client_id_has_no_pending_flag(make_api):
    api = make_api(
        store="memory",
        byos_claude_code_enabled="false",
        byos_claude_code_client_id=CLIENT_ID,
        byos_claude_code_authz_url="https://provider.example/authorize",
        byos_claude_code_token_url="https://provider.example/token",
    )
    assert api.http.get(f"{BYOS}/status").json() == {"connected": False, "disabled": True}


def test_disabled_refuses_every_action(make_api):
    api = make_api(
        store="memory", byos_claude_code_enabled="false", byos_claude_code_client_id=CLIENT_ID
    )
    h = api.auth()
    for path in ("/start", "/connect"):
        answer = api.http.post(f"{BYOS}{path}", headers=h, json={})
        assert answer.status_code == 403
        assert answer.json() == DISABLED
    answer = api.http.get(f"{BYOS}/callback", params={"code": "c", "state": "s"})
    assert answer.status_code == 403 and answer.json() == DISABLED
    for path in ("", "/disconnect"):
        answer = api.http.delete(f"{BYOS}{path}", headers=h)
        assert answer.status_code == 403 and answer.json() == DISABLED
    # config still describes the server, and still needs a token
    assert api.http.get(f"{BYOS}/config").status_code == 401
    # a client id without the provider URLs is still setup pending, in both answers
    assert api.http.get(f"{BYOS}/config", headers=h).json() == {"clientIdConfigured": False}
    assert api.http.get(f"{BYOS}/status").json()["client_id_pending"] is True


@pytest.mark.parametrize("value", ["true", "1", ""])
def test_enabling_values(make_api, value):
    api = make_api(store="memory", byos_claude_code_enabled=value)
    answer = api.http.get(f"{BYOS}/status")
    assert answer.status_code == 401
    assert answer.json() == {"error": "unauthenticated"}


@pytest.mark.parametrize("value", ["TRUE", "True", "yes", "on", "0"])
def test_only_exactly_true_or_1_enable(make_api, value):
    api = make_api(store="memory", byos_claude_code_enabled=value)
    answer = api.http.get(f"{BYOS}/status")  # disabled answers before the auth check
    assert answer.status_code == 200
    assert answer.json()["disabled"] is True


@pytest.mark.parametrize(
    "client_id", [None, "", "REPLACE_ME", "PLACEHOLDER-AWAITING-FOUNDER-REGISTRATION", "  "]
)
def test_setup_pending(make_api, client_id):
    overrides = {} if client_id is None else {"byos_claude_code_client_id": client_id}
    api = make_api(store="memory", **overrides)
    h = api.auth()
    assert api.http.get(f"{BYOS}/config", headers=h).json() == {"clientIdConfigured": False}
    status = api.http.get(f"{BYOS}/status", headers=h)
    assert status.status_code == 200
    assert status.json() == {"connected": False, "client_id_pending": True, "status": "pending"}
    for path in ("/start", "/connect"):
        answer = api.http.post(f"{BYOS}{path}", headers=h)
        assert answer.status_code == 503
        body = answer.json()
        assert body["error"] == "byos-operator-setup-pending"
        assert "SANDBOX_BYOS_CLAUDE_CODE_CLIENT_ID" in body["detail"]
        assert int(answer.headers["retry-after"]) > 0
    callback = api.http.get(f"{BYOS}/callback", params={"code": "c", "state": "s"})
    assert callback.status_code == 503
    assert callback.json()["error"] == "byos-operator-setup-pending"
    assert api.http.delete(BYOS, headers=h).status_code == 204


def test_client_id_without_provider_urls_is_still_pending(make_api):
    api = make_api(store="memory", byos_claude_code_client_id=CLIENT_ID)
    h = api.auth()
    answer = api.http.post(f"{BYOS}/start", headers=h, json={})
    assert answer.status_code == 503
    detail = answer.json()["detail"]
    assert "SANDBOX_BYOS_CLAUDE_CODE_AUTHZ_URL" in detail
    assert "SANDBOX_BYOS_CLAUDE_CODE_TOKEN_URL" in detail
    assert "CLIENT_ID" not in detail
    # /config agrees with /status: connecting cannot work yet, so not "configured"
    assert api.http.get(f"{BYOS}/config", headers=h).json() == {"clientIdConfigured": False}
    status = api.http.get(f"{BYOS}/status", headers=h).json()
    assert status["client_id_pending"] is True and status["status"] == "pending"


def test_configured(byos_api, provider):
    h = byos_api.auth()
    assert byos_api.http.get(f"{BYOS}/config", headers=h).json() == {
        "clientIdConfigured": True,
        "oauthAuthorizeURL": f"{provider.url}/authorize",
    }
    assert byos_api.http.get(f"{BYOS}/status", headers=h).json() == {
        "connected": False,
        "status": "disconnected",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/config"),
        ("GET", "/status"),
        ("POST", "/start"),
        ("POST", "/connect"),
        ("DELETE", ""),
        ("DELETE", "/disconnect"),
    ],
)
def test_routes_need_a_token_when_enabled(byos_api, method, path):
    answer = byos_api.http.request(method, f"{BYOS}{path}")
    assert answer.status_code == 401
    assert answer.json() == {"error": "unauthenticated"}
    bad = byos_api.http.request(
        method, f"{BYOS}{path}", headers={"Authorization": "Bearer not-a-jwt"}
    )
    assert bad.status_code == 401


@pytest.mark.parametrize("body", [b"", b"{}", b"  ", b'{"post_connect_redirect": null}'])
def test_start_accepts_an_empty_body(byos_api, body):
    answer = byos_api.http.post(
        f"{BYOS}/start",
        headers={**byos_api.auth(), "Content-Type": "application/json"},
        content=body,
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("body", [b"{", b"not json", b"[]", b'"/sandbox"', b"\xff\xfe"])
def test_start_rejects_malformed_json(byos_api, body):
    answer = byos_api.http.post(
        f"{BYOS}/start",
        headers={**byos_api.auth(), "Content-Type": "application/json"},
        content=body,
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid-json"
    assert answer.json()["detail"]


@pytest.mark.parametrize(
    "redirect",
    [
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/ok\nSet-Cookie: x=1",
        "/\x00",
        "sandbox/settings",
        " /sandbox",
        "/" + "a" * 3000,
        42,
        ["/sandbox"],
    ],
)
def test_start_rejects_redirects_off_site(byos_api, redirect):
    for path in ("/start", "/connect"):
        answer = byos_api.http.post(
            f"{BYOS}{path}", headers=byos_api.auth(), json={"post_connect_redirect": redirect}
        )
        assert answer.status_code == 400, redirect
        assert answer.json()["error"] == "invalid-redirect"
        assert "post_connect_redirect" in answer.json()["detail"]


def test_openapi_declares_every_status(byos_api):
    doc = byos_api.http.get("/api/openapi.json").json()["paths"]

    def codes(path: str, method: str) -> set[str]:
        return set(doc[f"{BYOS}{path}"][method]["responses"])

    assert {"200", "401"} <= codes("/config", "get")
    assert {"200", "401"} <= codes("/status", "get")
    assert {"200", "400", "401", "403", "503"} <= codes("/start", "post")
    assert {"200", "400", "401", "403", "503"} <= codes("/connect", "post")
    assert {"302", "400", "403", "503"} <= codes("/callback", "get")
    assert {"204", "401", "403"} <= codes("", "delete")
    assert {"204", "401", "403"} <= codes("/disconnect", "delete")
