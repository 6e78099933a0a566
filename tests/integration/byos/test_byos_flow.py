"""The connect flow over real HTTP: app ↔ browser ↔ a fake OAuth provider on loopback."""

from __future__ import annotations

import asyncio
import stat
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
import structlog
from byos_provider import BYOS, CALLBACK, CLIENT_ID, query_of, s256

from openova_sandbox.services.byos import ByosService
from openova_sandbox.testing.server import free_port


def start(api, *, redirect=None, path="/start", **who):
    body = {} if redirect is None else {"post_connect_redirect": redirect}
    answer = api.http.post(f"{BYOS}{path}", headers=api.auth(**who), json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def browser_callback(api, provider, started, **headers):
    """The provider's redirect back to us, sent like a browser: no session credentials."""
    return api.http.get(
        provider.callback_of(api.http, started["authorizeUrl"]),
        headers=headers,
        follow_redirects=False,
    )


def files_under(root):
    return [p for p in root.rglob("*") if p.is_file()]


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_full_connect_flow(byos_api, provider, tmp_path):
    api = byos_api
    started = start(api, redirect="/sandbox/settings")
    assert started["authorization_url"] == started["authorizeUrl"]
    assert uuid.UUID(started["state"]).version == 4

    url = urlsplit(started["authorizeUrl"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{provider.url}/authorize"
    q = query_of(started["authorizeUrl"])
    assert q["response_type"] == "code"
    assert q["client_id"] == CLIENT_ID
    assert q["redirect_uri"] == api.url + CALLBACK
    assert q["scope"] == "read:user write:claude-code"
    assert q["state"] == started["state"]
    assert q["code_challenge_method"] == "S256"
    assert len(q["code_challenge"]) == 43

    done = browser_callback(api, provider, started)
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/sandbox/settings"

    (exchange,) = provider.token_requests
    assert exchange["pkce_ok"] is True
    assert exchange["content_type"].startswith("application/x-www-form-urlencoded")
    form = exchange["form"]
    assert form["grant_type"] == "authorization_code"
    assert form["redirect_uri"] == api.url + CALLBACK
    assert form["client_id"] == CLIENT_ID
    assert s256(form["code_verifier"]) == q["code_challenge"]
    assert len(form["code_verifier"]) == 43

    h = api.auth()
    status = api.http.get(f"{BYOS}/status", headers=h).json()
    assert status["connected"] is True
    assert status["status"] == "connected"
    assert status["anthropic_account_email"] == "max@claude.example"
    assert status["accountLabel"] == "max@claude.example"
    assert status["connectedAt"] == status["connected_at"]
    assert status["connected_at"].endswith("Z") and len(status["connected_at"]) == 20
    assert "client_id_pending" not in status

    # encrypted at rest, private files, one per user
    (token,) = provider.issued_tokens
    byos_dir = tmp_path / "data" / "byos"
    files = files_under(byos_dir)
    assert len(files) == 2  # the key and this user's tokens
    for path in files:
        assert token.encode() not in path.read_bytes()
        assert b"sk-ant-" not in path.read_bytes()
        assert b"user-sub-abcdef12" not in path.read_bytes()
        assert "user-sub" not in path.name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((byos_dir / "key").stat().st_mode) == 0o600

    # the spawner's view, from the running service and from a fresh one (a restart)
    live = api.deps.byos
    assert live.credentials_for("user-sub-abcdef12") == {"CLAUDE_CODE_OAUTH_TOKEN": token}
    assert live.credentials_for("someone-else") == {}
    restarted = ByosService(settings=api.deps.settings)
    assert restarted.credentials_for("user-sub-abcdef12") == {"CLAUDE_CODE_OAUTH_TOKEN": token}

    # another user is not connected by this
    other = api.http.get(f"{BYOS}/status", headers=api.auth(sub="other-user")).json()
    assert other == {"connected": False, "status": "disconnected"}

    gone = api.http.delete(BYOS, headers=h)
    assert gone.status_code == 204 and gone.content == b""
    assert api.http.get(f"{BYOS}/status", headers=h).json() == {
        "connected": False,
        "status": "disconnected",
    }
    assert live.credentials_for("user-sub-abcdef12") == {}
    assert files_under(byos_dir) == [byos_dir / "key"]
    # idempotent, and the alias answers the same
    assert api.http.delete(BYOS, headers=h).status_code == 204
    assert api.http.delete(f"{BYOS}/disconnect", headers=h).status_code == 204


def test_connect_alias_default_redirect_and_unknown_email(byos_api, provider):
    provider.email_in = None
    started = start(byos_api, path="/connect")
    done = browser_callback(byos_api, provider, started)
    assert done.status_code == 302
    assert done.headers["location"] == "/sandbox?byos=ok"
    status = byos_api.http.get(f"{BYOS}/status", headers=byos_api.auth()).json()
    assert status["connected"] is True
    assert "anthropic_account_email" not in status
    assert status["accountLabel"] == "Claude account"
    # the alias disconnect removes it too
    assert byos_api.http.delete(f"{BYOS}/disconnect", headers=byos_api.auth()).status_code == 204
    assert byos_api.deps.byos.credentials_for("user-sub-abcdef12") == {}


def test_top_level_email_is_used(byos_api, provider):
    provider.email_in = "top"
    browser_callback(byos_api, provider, start(byos_api))
    status = byos_api.http.get(f"{BYOS}/status", headers=byos_api.auth()).json()
    assert status["anthropic_account_email"] == "top@claude.example"


def test_state_is_single_use(byos_api, provider):
    started = start(byos_api)
    callback = provider.callback_of(byos_api.http, started["authorizeUrl"])
    assert byos_api.http.get(callback).status_code == 302
    again = byos_api.http.get(callback)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid-state"
    assert len(provider.token_requests) == 1  # the replay never reached the provider


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"state": "x"}, "missing-code"),
        ({"code": "", "state": "x"}, "missing-code"),
        ({"code": "abc"}, "missing-state"),
        ({"code": "abc", "state": str(uuid.uuid4())}, "invalid-state"),
        ({"code": "abc", "state": "not-a-uuid"}, "invalid-state"),
    ],
)
def test_callback_bad_requests(byos_api, params, code):
    answer = byos_api.http.get(f"{BYOS}/callback", params=params)
    assert answer.status_code == 400
    assert answer.json()["error"] == code
    assert answer.json()["detail"]


def test_state_expires_after_ten_minutes(byos_api, provider):
    clock = FakeClock()
    byos_api.deps.byos = ByosService(settings=byos_api.deps.settings, clock=clock)
    late = start(byos_api)
    on_time = start(byos_api)
    late_cb = provider.callback_of(byos_api.http, late["authorizeUrl"])
    on_time_cb = provider.callback_of(byos_api.http, on_time["authorizeUrl"])

    clock.now += 599
    assert byos_api.http.get(on_time_cb).status_code == 302
    clock.now += 2
    expired = byos_api.http.get(late_cb)
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid-state"


def test_expired_token_is_not_injected(byos_api, provider):
    clock = FakeClock()
    byos_api.deps.byos = ByosService(settings=byos_api.deps.settings, clock=clock)
    provider.expires_in = 3600
    browser_callback(byos_api, provider, start(byos_api))
    service = byos_api.deps.byos
    assert "CLAUDE_CODE_OAUTH_TOKEN" in service.credentials_for("user-sub-abcdef12")
    clock.now += 3601
    assert service.credentials_for("user-sub-abcdef12") == {}


def test_provider_error_redirects_and_burns_the_state(byos_api, provider):
    provider.deny = True
    started = start(byos_api)
    answer = browser_callback(byos_api, provider, started)
    assert answer.status_code == 302
    assert answer.headers["location"] == "/sandbox?byos=error&reason=access_denied"
    status = byos_api.http.get(f"{BYOS}/status", headers=byos_api.auth()).json()
    assert status == {"connected": False, "status": "error"}
    # the state was used up by the error
    replay = byos_api.http.get(
        f"{BYOS}/callback", params={"code": "abc", "state": started["state"]}
    )
    assert replay.status_code == 400
    # starting again clears nothing by itself; connecting does
    provider.deny = False
    browser_callback(byos_api, provider, start(byos_api))
    status = byos_api.http.get(f"{BYOS}/status", headers=byos_api.auth()).json()
    assert status["status"] == "connected"


def test_provider_error_reason_is_escaped(byos_api):
    answer = byos_api.http.get(
        f"{BYOS}/callback",
        params={"error": "bad thing&next=//evil.example", "state": "unknown"},
        follow_redirects=False,
    )
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location == "/sandbox?byos=error&reason=bad%20thing%26next%3D%2F%2Fevil.example"
    assert query_of(location) == {"byos": "error", "reason": "bad thing&next=//evil.example"}


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("status500", "token-exchange-failed"),
        ("not-json", "invalid-token-response"),
        ("no-access-token", "invalid-token-response"),
    ],
)
def test_token_endpoint_failures(byos_api, provider, mode, reason):
    provider.mode = mode
    answer = browser_callback(byos_api, provider, start(byos_api))
    assert answer.status_code == 302
    assert answer.headers["location"] == f"/sandbox?byos=error&reason={reason}"
    status = byos_api.http.get(f"{BYOS}/status", headers=byos_api.auth()).json()
    assert status == {"connected": False, "status": "error"}
    assert byos_api.deps.byos.credentials_for("user-sub-abcdef12") == {}


def test_code_the_provider_never_issued(byos_api, provider):
    started = start(byos_api)
    answer = byos_api.http.get(
        f"{BYOS}/callback", params={"code": "forged", "state": started["state"]}
    )
    assert answer.status_code == 302
    assert answer.headers["location"] == "/sandbox?byos=error&reason=invalid_grant"


def test_provider_unreachable(make_api):
    port = free_port()  # nothing listens there
    api = make_api(
        store="memory",
        byos_claude_code_client_id=CLIENT_ID,
        byos_claude_code_authz_url="https://provider.example/authorize",
        byos_claude_code_token_url=f"http://127.0.0.1:{port}/token",
    )
    started = start(api)
    answer = api.http.get(f"{BYOS}/callback", params={"code": "c", "state": started["state"]})
    assert answer.status_code == 302
    assert answer.headers["location"] == "/sandbox?byos=error&reason=provider-unreachable"


def test_callback_with_another_users_credentials_is_refused(byos_api, provider):
    started = start(byos_api, sub="alice-sub")
    callback = provider.callback_of(byos_api.http, started["authorizeUrl"])
    answer = byos_api.http.get(callback, headers=byos_api.auth(sub="mallory-sub"))
    assert answer.status_code == 403
    assert answer.json()["error"] == "byos-state-user-mismatch"
    assert byos_api.deps.byos.credentials_for("alice-sub") == {}
    assert byos_api.deps.byos.credentials_for("mallory-sub") == {}


def test_callback_with_the_same_users_credentials_works(byos_api, provider):
    started = start(byos_api, sub="alice-sub")
    answer = browser_callback(
        byos_api, provider, started, Authorization=f"Bearer {byos_api.token(sub='alice-sub')}"
    )
    assert answer.status_code == 302
    assert byos_api.deps.byos.credentials_for("alice-sub")


def test_disconnect_forgets_flows_in_flight(byos_api, provider):
    started = start(byos_api)
    callback = provider.callback_of(byos_api.http, started["authorizeUrl"])
    assert byos_api.http.delete(BYOS, headers=byos_api.auth()).status_code == 204
    answer = byos_api.http.get(callback)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid-state"


def test_tokens_never_reach_the_log(byos_api, provider):
    # captured before rendering and redaction: the token must not even be handed to a logger
    with structlog.testing.capture_logs() as entries:
        browser_callback(byos_api, provider, start(byos_api))
        byos_api.deps.byos.credentials_for("user-sub-abcdef12")
    (token,) = provider.issued_tokens
    assert any(e["event"] == "byos connected" for e in entries)  # logging was captured
    assert token not in repr(entries)
    assert provider.token_requests[0]["form"]["code_verifier"] not in repr(entries)


def test_public_url_is_the_redirect_base(make_api, provider):
    api = make_api(
        store="memory",
        public_url="https://sandbox.acme.example/",
        byos_claude_code_client_id=CLIENT_ID,
        byos_claude_code_authz_url=f"{provider.url}/authorize?prompt=consent",
        byos_claude_code_token_url=f"{provider.url}/token",
    )
    q = query_of(start(api)["authorizeUrl"])
    assert q["redirect_uri"] == "https://sandbox.acme.example" + CALLBACK
    assert q["prompt"] == "consent"  # the operator's own query parameters are kept


def test_http_client_can_be_injected(byos_api, provider):
    async def run() -> None:
        async with httpx.AsyncClient() as http:
            service = ByosService(settings=byos_api.deps.settings, http=http)
            started = service.start(
                sub="u-1", base_url="http://sandbox.test/", post_connect_redirect=None
            )
            answer = httpx.get(started["authorizeUrl"], follow_redirects=False)
            cb = query_of(answer.headers["location"])
            where = await service.finish(code=cb["code"], state=cb["state"], error=None)
            assert where == "/sandbox?byos=ok"
            assert service.status("u-1")["connected"] is True

    asyncio.run(run())
