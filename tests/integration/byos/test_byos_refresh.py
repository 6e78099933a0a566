"""An expiring subscription token is renewed with the refresh token before a spawn."""

from __future__ import annotations

import asyncio

import structlog
from byos_provider import BYOS, FakeProvider
from test_byos_flow import FakeClock, browser_callback, start

from openova_sandbox.services.byos import REFRESH_MARGIN_SECONDS, ByosService

SUB = "user-sub-abcdef12"
ENV = "CLAUDE_CODE_OAUTH_TOKEN"


def connected(api, provider: FakeProvider) -> tuple[ByosService, FakeClock]:
    clock = FakeClock()
    api.deps.byos = ByosService(settings=api.deps.settings, clock=clock)
    provider.expires_in = 3600
    assert browser_callback(api, provider, start(api)).status_code == 302
    return api.deps.byos, clock


def refresh_grants(provider: FakeProvider) -> list[dict[str, str]]:
    return [
        r["form"] for r in provider.token_requests if r["form"].get("grant_type") == "refresh_token"
    ]


def test_a_fresh_token_is_left_alone(byos_api, provider):
    service, clock = connected(byos_api, provider)
    clock.now += 3600 - REFRESH_MARGIN_SECONDS - 1
    asyncio.run(service.refresh_if_needed(SUB))
    assert refresh_grants(provider) == []
    assert service.credentials_for(SUB) == {ENV: provider.issued_tokens[0]}


def test_an_expiring_token_is_renewed_and_the_rotated_refresh_token_kept(byos_api, provider):
    service, clock = connected(byos_api, provider)
    first_refresh = provider.issued_refresh[0]
    connected_at = service.status(SUB)["connected_at"]
    clock.now += 3600 - REFRESH_MARGIN_SECONDS + 1  # inside the margin, not yet expired
    asyncio.run(service.refresh_if_needed(SUB))
    assert [g["refresh_token"] for g in refresh_grants(provider)] == [first_refresh]
    renewed = provider.issued_tokens[1]
    assert service.credentials_for(SUB) == {ENV: renewed}
    # the account and the connection time survive a refresh
    status = service.status(SUB)
    assert status["anthropic_account_email"] == "max@claude.example"
    assert status["connected_at"] == connected_at
    # the next refresh uses the rotated token (the old one is dead at the provider)
    clock.now += 3600
    assert service.credentials_for(SUB) == {}  # expired until refreshed
    asyncio.run(service.refresh_if_needed(SUB))
    assert [g["refresh_token"] for g in refresh_grants(provider)] == [
        first_refresh,
        provider.issued_refresh[1],
    ]
    assert service.credentials_for(SUB) == {ENV: provider.issued_tokens[2]}
    # a restarted server reads the renewed tokens from the vault
    again = ByosService(settings=byos_api.deps.settings, clock=clock)
    assert again.credentials_for(SUB) == {ENV: provider.issued_tokens[2]}


def test_a_refresh_answer_without_a_refresh_token_keeps_the_old_one(byos_api, provider):
    service, clock = connected(byos_api, provider)
    provider.refresh_mode = "keep"
    for _ in range(2):
        clock.now += 3600
        asyncio.run(service.refresh_if_needed(SUB))
    grants = refresh_grants(provider)
    assert [g["refresh_token"] for g in grants] == [provider.issued_refresh[0]] * 2
    assert service.credentials_for(SUB) == {ENV: provider.issued_tokens[2]}


def test_concurrent_spawns_refresh_once(byos_api, provider):
    service, clock = connected(byos_api, provider)
    clock.now += 3600

    async def both() -> None:
        await asyncio.gather(*(service.refresh_if_needed(SUB) for _ in range(5)))

    asyncio.run(both())
    # one grant: the others waited and found the renewed token (a rotated refresh
    # token used twice would have been refused and ended the connection)
    assert len(refresh_grants(provider)) == 1
    assert service.credentials_for(SUB) == {ENV: provider.issued_tokens[1]}


def test_a_revoked_grant_ends_the_connection(byos_api, provider):
    service, clock = connected(byos_api, provider)
    provider.refresh_mode = "invalid_grant"
    clock.now += 3600
    with structlog.testing.capture_logs() as entries:
        asyncio.run(service.refresh_if_needed(SUB))
    assert service.credentials_for(SUB) == {}
    status = byos_api.http.get(f"{BYOS}/status", headers=byos_api.auth()).json()
    assert (status["connected"], status["status"]) == (False, "error")
    assert any(e["event"] == "byos refresh refused; disconnected" for e in entries)
    for token in (*provider.issued_tokens, *provider.issued_refresh):
        assert token not in repr(entries)


def test_a_provider_fault_keeps_the_connection_for_the_next_try(byos_api, provider):
    service, clock = connected(byos_api, provider)
    provider.refresh_mode = "status500"
    clock.now += 3600
    asyncio.run(service.refresh_if_needed(SUB))
    assert service.credentials_for(SUB) == {}  # expired, so not injected
    assert service.status(SUB)["connected"] is True
    provider.refresh_mode = "rotate"
    asyncio.run(service.refresh_if_needed(SUB))
    assert service.credentials_for(SUB) == {ENV: provider.issued_tokens[1]}
