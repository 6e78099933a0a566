"""Disconnect revokes the tokens at the provider (RFC 7009) when it has an endpoint."""

from __future__ import annotations

import pytest
import structlog
from byos_provider import BYOS, CLIENT_ID, FakeProvider
from test_byos_flow import browser_callback, start

from openova_sandbox.testing.server import free_port

SUB = "user-sub-abcdef12"


@pytest.fixture
def revoking_api(make_api, provider: FakeProvider):
    return make_api(
        store="memory",
        byos_claude_code_client_id=CLIENT_ID,
        byos_claude_code_authz_url=f"{provider.url}/authorize",
        byos_claude_code_token_url=f"{provider.url}/token",
        byos_claude_code_revoke_url=f"{provider.url}/revoke",
    )


def connect(api, provider: FakeProvider) -> None:
    assert browser_callback(api, provider, start(api)).status_code == 302
    assert api.deps.byos.credentials_for(SUB)


def test_disconnect_revokes_refresh_then_access_token(revoking_api, provider):
    connect(revoking_api, provider)
    answer = revoking_api.http.delete(BYOS, headers=revoking_api.auth())
    assert answer.status_code == 204
    (access,), (refresh,) = provider.issued_tokens, provider.issued_refresh
    assert provider.revocations == [
        {"token": refresh, "token_type_hint": "refresh_token", "client_id": CLIENT_ID},
        {"token": access, "token_type_hint": "access_token", "client_id": CLIENT_ID},
    ]
    assert revoking_api.deps.byos.credentials_for(SUB) == {}
    # nothing left to revoke the second time: no call, still 204
    assert revoking_api.http.delete(BYOS, headers=revoking_api.auth()).status_code == 204
    assert len(provider.revocations) == 2


@pytest.mark.parametrize("status", [400, 503])
def test_a_refusing_provider_still_loses_our_copy(revoking_api, provider, status):
    connect(revoking_api, provider)
    provider.revoke_status = status
    with structlog.testing.capture_logs() as entries:
        answer = revoking_api.http.delete(f"{BYOS}/disconnect", headers=revoking_api.auth())
    assert answer.status_code == 204
    assert revoking_api.deps.byos.credentials_for(SUB) == {}
    assert revoking_api.http.get(f"{BYOS}/status", headers=revoking_api.auth()).json() == {
        "connected": False,
        "status": "disconnected",
    }
    refused = [e for e in entries if e["event"] == "byos revocation refused"]
    assert [e["status"] for e in refused] == [status, status]
    # the tokens are never handed to a logger, even on failure
    for token in (*provider.issued_tokens, *provider.issued_refresh):
        assert token not in repr(entries)


def test_an_unreachable_provider_still_loses_our_copy(make_api, provider):
    api = make_api(
        store="memory",
        byos_claude_code_client_id=CLIENT_ID,
        byos_claude_code_authz_url=f"{provider.url}/authorize",
        byos_claude_code_token_url=f"{provider.url}/token",
        byos_claude_code_revoke_url=f"http://127.0.0.1:{free_port()}/revoke",
    )
    connect(api, provider)
    with structlog.testing.capture_logs() as entries:
        assert api.http.delete(BYOS, headers=api.auth()).status_code == 204
    assert api.deps.byos.credentials_for(SUB) == {}
    assert [e["event"] for e in entries if "revocation" in e["event"]] == [
        "byos revocation unreachable"
    ]


def test_no_revocation_endpoint_means_no_call(byos_api, provider):
    connect(byos_api, provider)
    assert byos_api.http.delete(BYOS, headers=byos_api.auth()).status_code == 204
    assert provider.revocations == []
    assert byos_api.deps.byos.credentials_for(SUB) == {}
