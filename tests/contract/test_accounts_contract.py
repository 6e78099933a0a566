"""Access-token and quota-override storage (store/sql_accounts.py, and the in-memory
stores of services/tokens.py and services/quotas.py) on every backend: in memory,
SQLite and a real PostgreSQL server. ``open()`` on SQL gives a second engine on the same
database, as a second replica would have: what one writes, the other reads; the
tokens service over it authenticates, caches, revokes and records use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.domain.access_tokens import AccessToken, hash_token, new_token
from openova_sandbox.domain.errors import Unauthenticated
from openova_sandbox.domain.principal import Principal
from openova_sandbox.domain.quotas import QuotaKey
from openova_sandbox.services.quotas import MemoryQuotas
from openova_sandbox.services.tokens import MemoryTokens, TokensService
from openova_sandbox.store.sql_accounts import SqlAccounts
from support.migrations import tables, to
from support.postgres import fresh_database

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
START = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
DEV = Principal(sub="sub-dev", email="dev@acme.com", org="acme", roles=frozenset({"org-admin"}))


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Accounts:
    def __init__(self, url: str | None) -> None:
        self.url = url
        self._memory: tuple[MemoryTokens, MemoryQuotas] | None = None
        self._opened: list[SqlAccounts] = []

    async def open(self) -> Any:
        """A handle that is both a token store and a quota store."""
        if self.url is None:
            if self._memory is None:
                self._memory = (MemoryTokens(), MemoryQuotas())
            return _Both(*self._memory)
        accounts = SqlAccounts(self.url)
        await accounts.start()
        self._opened.append(accounts)
        return accounts

    async def close_all(self) -> None:
        for accounts in reversed(self._opened):
            await accounts.close()


class _Both:
    def __init__(self, tokens: MemoryTokens, quotas: MemoryQuotas) -> None:
        self._tokens = tokens
        self._quotas = quotas

    def __getattr__(self, name: str) -> Any:
        return getattr(self._quotas if "quota" in name else self._tokens, name)


@pytest.fixture(params=BACKENDS)
async def accounts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Accounts]:
    url: str | None = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'sandbox.db'}"
    elif request.param == "postgres":
        url = await fresh_database(request.getfixturevalue("postgres_url"))
    opened = Accounts(url)
    yield opened
    await opened.close_all()


def token(
    token_id: str,
    *,
    owner: str = "sub-dev",
    org: str = "acme",
    days: int = 30,
    at: datetime = START,
) -> AccessToken:
    return AccessToken(
        id=token_id,
        name=f"name-{token_id}",
        owner_sub=owner,
        owner_email=f"{owner}@{org}.com",
        org=org,
        identity={"roles": ["org-admin"], "tier": "", "groups": ["g"], "username": "dev"},
        created_at=at,
        expires_at=at + timedelta(days=days),
    )


async def test_tokens_are_found_by_digest_listed_and_revoked_across_handles(accounts: Accounts):
    one, two = await accounts.open(), await accounts.open()
    first = token("000000000000000a")
    assert await one.add_token(first, hash_token("secret-a"), max_active=50)
    found = await two.find_token(hash_token("secret-a"))
    assert found == first
    assert found.principal() == Principal(
        sub="sub-dev",
        email="sub-dev@acme.com",
        org="acme",
        roles=frozenset({"org-admin"}),
        groups=("g",),
        username="dev",
    )
    assert await two.find_token(hash_token("secret-b")) is None
    assert await two.get_token("000000000000000a") == first
    assert await two.get_token("000000000000000f") is None
    later = token("000000000000000b", at=START + timedelta(minutes=1))
    other_owner = token("000000000000000c", owner="sub-ops")
    other_org = token("000000000000000d", org="globex")
    for t, secret in ((later, "b"), (other_owner, "c"), (other_org, "d")):
        assert await one.add_token(t, hash_token(secret), max_active=50)
    assert [t.id for t in await two.list_tokens("acme", "sub-dev")] == [later.id, first.id]
    assert {t.id for t in await two.list_tokens("acme", None)} == {
        first.id,
        later.id,
        other_owner.id,
    }
    assert [t.id for t in await two.list_tokens("globex", None)] == [other_org.id]
    # revoked once; listed no more; still found (so the authenticator can say revoked)
    assert await one.revoke_token(first.id, START + timedelta(hours=1))
    assert not await two.revoke_token(first.id, START + timedelta(hours=2))
    assert not await two.revoke_token("0000000000000fff", START)
    revoked = await two.find_token(hash_token("secret-a"))
    assert revoked is not None and revoked.revoked_at == START + timedelta(hours=1)
    assert first.id not in {t.id for t in await two.list_tokens("acme", None)}


async def test_a_digest_is_unique(accounts: Accounts):
    store = await accounts.open()
    assert await store.add_token(token("000000000000000a"), "d" * 64, max_active=50)
    if accounts.url is None:
        return  # the memory store is only ever given fresh digests by the service
    with pytest.raises(Exception):  # noqa: B017 - the database's unique index refuses it
        await store.add_token(token("000000000000000b"), "d" * 64, max_active=50)


async def test_at_most_max_active_usable_tokens_per_owner(accounts: Accounts):
    store = await accounts.open()
    # expired before the others are made: it does not count
    expired = token("00000000000000a5", days=1, at=START - timedelta(days=2))
    assert await store.add_token(expired, "5" * 64, max_active=3)
    for i in range(3):
        assert await store.add_token(token(f"00000000000000a{i}"), f"{i}" * 64, max_active=3)
    assert not await store.add_token(token("00000000000000a9"), "9" * 64, max_active=3)
    assert await store.add_token(token("00000000000000b0", owner="sub-ops"), "e" * 64, max_active=3)
    # a revoked or expired one frees its place
    await store.revoke_token("00000000000000a0", START)
    assert await store.add_token(token("00000000000000a9"), "9" * 64, max_active=3)


async def test_concurrent_adds_keep_the_cap(accounts: Accounts):
    stores = [await accounts.open() for _ in range(3)]
    assert await stores[0].add_token(token("00000000000000c0"), "0" * 64, max_active=3)
    results = await asyncio.gather(
        *(
            stores[i % 3].add_token(token(f"00000000000000d{i}"), f"{i + 1}" * 64, max_active=3)
            for i in range(6)
        )
    )
    assert sum(results) == 2
    assert len(await stores[0].list_tokens("acme", "sub-dev")) == 3


async def test_last_use_is_written_at_most_once_per_interval(accounts: Accounts):
    store = await accounts.open()
    await store.add_token(token("000000000000000a"), "a" * 64, max_active=50)
    use = START + timedelta(hours=1)
    await store.touch_token("000000000000000a", use, older_than=use - timedelta(minutes=1))
    soon = use + timedelta(seconds=30)
    await store.touch_token("000000000000000a", soon, older_than=soon - timedelta(minutes=1))
    assert (await store.get_token("000000000000000a")).last_used_at == use
    later = use + timedelta(minutes=5)
    await store.touch_token("000000000000000a", later, older_than=later - timedelta(minutes=1))
    assert (await store.get_token("000000000000000a")).last_used_at == later


async def test_purge_forgets_long_revoked_or_expired_tokens(accounts: Accounts):
    store = await accounts.open()
    await store.add_token(token("000000000000000a", days=1), "a" * 64, max_active=50)
    await store.add_token(token("000000000000000b"), "b" * 64, max_active=50)
    await store.add_token(token("000000000000000c"), "c" * 64, max_active=50)
    await store.revoke_token("000000000000000c", START)
    assert await store.purge_tokens(START + timedelta(days=2)) == 2
    assert [t.id for t in await store.list_tokens("acme", None)] == ["000000000000000b"]


async def test_quota_overrides_are_set_cleared_and_kept_per_namespace(accounts: Accounts):
    one, two = await accounts.open(), await accounts.open()
    org = QuotaKey("org", "acme", "acme")
    dev = QuotaKey("user", "acme", "dev@acme.com")
    await one.set_quotas(org, {"sandboxes": 10, "websockets": 0}, at=START, by="adm@acme.com")
    await one.set_quotas(dev, {"terminals": 4}, at=START, by="adm@acme.com")
    await one.set_quotas(QuotaKey("org", "globex", "globex"), {"sandboxes": 1}, at=START, by="boss")
    rows = await two.quota_overrides("acme")
    assert [(r.key, r.quota, r.value, r.updated_by) for r in rows] == [
        (org, "sandboxes", 10, "adm@acme.com"),
        (org, "websockets", 0, "adm@acme.com"),
        (dev, "terminals", 4, "adm@acme.com"),
    ]
    assert all(r.updated_at == START for r in rows)
    later = START + timedelta(hours=1)
    await two.set_quotas(org, {"sandboxes": 12, "websockets": None}, at=later, by="other")
    rows = await one.quota_overrides("acme")
    assert [(r.key.scope, r.quota, r.value) for r in rows] == [
        ("org", "sandboxes", 12),
        ("user", "terminals", 4),
    ]
    assert rows[0].updated_at == later and rows[0].updated_by == "other"
    assert [r.value for r in await one.quota_overrides("globex")] == [1]
    assert await one.quota_overrides("initech") == []


async def test_the_tokens_service_over_the_store(accounts: Accounts):
    clock = Clock()
    store = await accounts.open()
    service = TokensService(store, clock=clock, cache_seconds=60.0)
    created = await service.create(DEV, {"name": "ci", "expiresInDays": 2})
    secret = created["token"]
    assert (await service.authenticate(secret)).sub == "sub-dev"
    # a second replica over the same data sees the token, and its revocation
    other = TokensService(await accounts.open(), clock=clock, cache_seconds=60.0)
    assert (await other.authenticate(secret)).via_token == created["id"]
    await other.revoke(DEV, created["id"])
    with pytest.raises(Unauthenticated):
        await other.authenticate(secret)  # the revoking replica forgets at once
    # the first replica's cache holds for its cache time (documented), then it re-reads
    assert (await service.authenticate(secret)).sub == "sub-dev"
    fresh = TokensService(store, clock=clock, cache_seconds=0.0)
    with pytest.raises(Unauthenticated):
        await fresh.authenticate(secret)
    # expiry, by the clock
    second = await fresh.create(DEV, {"name": "ci2", "expiresInDays": 1})
    assert (await fresh.authenticate(second["token"])).expires_at is not None
    clock.now = START + timedelta(days=1)
    with pytest.raises(Unauthenticated):
        await fresh.authenticate(second["token"])
    # well-formed but never issued
    _, stranger = new_token()
    with pytest.raises(Unauthenticated):
        await fresh.authenticate(stranger)


@pytest.mark.parametrize(
    "backend", [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_a_database_at_0002_is_brought_to_0003_and_back(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Migration 0003 on a database an older release left at 0002 (its ledger rows
    kept), and its downgrade."""
    from sqlalchemy import text

    from openova_sandbox.store.sql_engine import create_engine, parse_url

    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    else:
        url = await fresh_database(request.getfixturevalue("postgres_url"))
    engine = create_engine(parse_url(url), echo=False, connect_timeout=5)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(to("0002"))
            await connection.execute(
                text(
                    "INSERT INTO gateway_budgets (scope, namespace, name, limit_nanos, "
                    "updated_at, updated_by) VALUES ('org', 'acme', 'acme', 5, "
                    "CURRENT_TIMESTAMP, 'x')"
                )
            )
        async with engine.connect() as connection:
            assert "sandbox_access_tokens" not in await connection.run_sync(tables)
        accounts = SqlAccounts(url)
        await accounts.start()  # upgrades to head
        try:
            assert await accounts.add_token(token("000000000000000a"), "a" * 64, max_active=5)
        finally:
            await accounts.close()
        async with engine.connect() as connection:
            found = await connection.run_sync(tables)
            assert {"sandbox_access_tokens", "sandbox_quotas", "gateway_budgets"} <= found
            kept = await connection.execute(text("SELECT limit_nanos FROM gateway_budgets"))
            assert kept.scalar_one() == 5
        async with engine.begin() as connection:
            await connection.run_sync(to("0002", down=True))
        async with engine.connect() as connection:
            found = await connection.run_sync(tables)
            assert "sandbox_access_tokens" not in found and "sandbox_quotas" not in found
            assert "gateway_budgets" in found
    finally:
        await engine.dispose()
