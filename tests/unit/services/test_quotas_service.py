"""QuotasService and the create path: the per-namespace lock (two creates racing for
the last slot, interleaved deterministically), the counters' release, the ceiling of
overrides and the defaults when overrides cannot be read."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest

from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.errors import BackendUnavailable, Invalid, QuotaExceeded
from openova_sandbox.domain.model import Quota, Sandbox
from openova_sandbox.domain.principal import Principal
from openova_sandbox.domain.quotas import (
    QuotaDefaults,
    QuotaKey,
    QuotaName,
    QuotaOverride,
    QuotaRefused,
    parse_quota_setting,
)
from openova_sandbox.events.bus import InProcessBus
from openova_sandbox.services.quotas import MemoryQuotas, QuotasService
from openova_sandbox.services.sessions import CreateRequest, SessionsPolicy, SessionsService
from openova_sandbox.store.base import Store
from openova_sandbox.store.memory import MemoryStore
from openova_sandbox.store.sql import SqlStore

DEV = Principal(sub="dev", email="dev@acme.com", org="acme")
OPS = Principal(sub="ops", email="ops@acme.com", org="acme")
ADMIN = Principal(sub="adm", email="adm@acme.com", org="acme", roles=frozenset({"org-admin"}))


class InterleavingStore:
    """A store whose ``list`` hands control to the loop many times after reading, so
    every create started together reads the namespace before any of them stores."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    async def list(self, namespace: str | None = None, **kw: object) -> list[Sandbox]:
        items = await self.inner.list(namespace)
        for _ in range(100):  # the others read too before this answer is used
            await asyncio.sleep(0)
        return items

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def sessions_over(store: object, quotas: QuotasService | None = None) -> SessionsService:
    sessions = SessionsService(
        store=store,  # type: ignore[arg-type]
        catalogue=load_catalogue(None),
        policy=SessionsPolicy(default_namespace="default", quota=Quota()),
        bus=InProcessBus(),
    )
    sessions.quotas = quotas
    return sessions


def quotas_for(sessions: SessionsService, **user: int | None) -> QuotasService:
    limits: Mapping[QuotaName, int | None] = {**QuotaDefaults().user, **user}  # type: ignore[dict-item]
    return QuotasService(
        MemoryQuotas(),
        QuotaDefaults(user=limits),
        namespace_of=sessions.namespace_of,
    )


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    inner: Store = (
        MemoryStore()
        if request.param == "memory"
        else SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}")
    )
    await inner.start()
    yield InterleavingStore(inner)
    await inner.close()


async def test_creates_racing_for_the_last_slot_let_exactly_one_in(store: InterleavingStore):
    sessions = sessions_over(store)
    sessions.quotas = quotas_for(sessions, sandboxes=2)
    await sessions.create(DEV, CreateRequest(agent="shell", name="first"))
    results = await asyncio.gather(
        *(sessions.create(DEV, CreateRequest(agent="shell", name=f"r{i}")) for i in range(5)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Sandbox)]
    lost = [r for r in results if isinstance(r, QuotaRefused)]
    assert len(won) == 1 and len(lost) == 4, results
    assert len(await store.inner.list("acme")) == 2


async def test_without_quotas_the_same_race_lets_all_in(store: InterleavingStore):
    """The store really interleaves: without the quota (and its lock) nothing stops them."""
    sessions = sessions_over(store)
    results = await asyncio.gather(
        *(sessions.create(DEV, CreateRequest(agent="shell", name=f"r{i}")) for i in range(3))
    )
    assert len(results) == 3


async def test_the_lock_is_per_namespace_and_a_taken_name_is_409_first():
    store = MemoryStore()
    sessions = sessions_over(store)
    sessions.quotas = quotas_for(sessions, sandboxes=1)
    await sessions.create(DEV, CreateRequest(agent="shell", name="one"))
    with pytest.raises(QuotaExceeded) as refused:
        await sessions.create(DEV, CreateRequest(agent="shell", name="two"))
    assert refused.value.code == "quota-exceeded"
    from openova_sandbox.domain.errors import AlreadyExists

    with pytest.raises(AlreadyExists):
        await sessions.create(DEV, CreateRequest(agent="shell", name="one"))
    # another user of the org has a quota of their own
    await sessions.create(OPS, CreateRequest(agent="shell", name="ops"))


async def test_held_slots_are_released_once():
    sessions = sessions_over(MemoryStore())
    quotas = quotas_for(sessions, websockets=2)
    first = await quotas.hold("websockets", DEV)
    second = await quotas.hold("websockets", DEV)
    with pytest.raises(QuotaRefused) as refused:
        await quotas.hold("websockets", DEV)
    assert (refused.value.limit, refused.value.usage) == (2, 2)
    assert quotas.held("websockets", "acme", "dev@acme.com") == 2
    assert quotas.held("websockets", "acme", None) == 2
    first.release()
    first.release()  # a second release gives back nothing more
    assert quotas.held("websockets", "acme", "dev@acme.com") == 1
    with await quotas.hold("websockets", DEV):
        assert quotas.held("websockets", "acme", None) == 2
    second.release()
    assert quotas.held("websockets", "acme", None) == 0
    # another user is counted apart (the org's count is shared)
    with await quotas.hold("websockets", OPS):
        assert quotas.held("websockets", "acme", "ops@acme.com") == 1


async def test_overrides_stay_under_the_operators_org_limit():
    sessions = sessions_over(MemoryStore())
    quotas = QuotasService(
        MemoryQuotas(),
        QuotaDefaults(org={**QuotaDefaults().org, "terminals": None}),
        namespace_of=sessions.namespace_of,
    )
    key = quotas.changeable(ADMIN, "user", "dev@acme.com")
    with pytest.raises(Invalid) as too_many:
        await quotas.put(ADMIN, key, {"sandboxes": 251})
    assert "at most 250" in too_many.value.detail
    # a limit the operator leaves open has no ceiling
    out = await quotas.put(ADMIN, key, {"terminals": 5000})
    assert out["limits"]["terminals"] == 5000


class FailingQuotas(MemoryQuotas):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def quota_overrides(self, namespace: str) -> list[QuotaOverride]:
        if self.down:
            raise BackendUnavailable("database away")
        return await super().quota_overrides(namespace)


async def test_overrides_that_cannot_be_read_fall_back_to_the_last_known():
    store = FailingQuotas()
    sessions = sessions_over(MemoryStore())
    quotas = QuotasService(
        store, QuotaDefaults(), namespace_of=sessions.namespace_of, cache_seconds=0.0
    )
    await store.set_quotas(
        QuotaKey("user", "acme", "dev@acme.com"), {"websockets": 1}, at=_now(), by="adm"
    )
    assert (await quotas.limits("acme", "dev@acme.com")).user_limits["websockets"] == 1
    store.down = True
    assert (await quotas.limits("acme", "dev@acme.com")).user_limits["websockets"] == 1
    assert (await quotas.limits("other", "x@other")).user_limits["websockets"] == 60


def test_the_setting_reads_name_value_pairs_over_the_defaults():
    got = parse_quota_setting(
        " sandboxes=3 , websockets=none,", QuotaDefaults().user, variable="SANDBOX_QUOTA_USER"
    )
    assert got == {"sandboxes": 3, "terminals": 40, "websockets": None, "waitingAttaches": 10}
    for bad in ("sandboxes", "sandboxes=-1", "sandboxes=x", "cpu=1", "sandboxes=1000001"):
        with pytest.raises(Invalid) as refused:
            parse_quota_setting(bad, QuotaDefaults().user, variable="SANDBOX_QUOTA_USER")
        assert refused.value.detail.startswith("SANDBOX_QUOTA_USER: ")


def _now():  # type: ignore[no-untyped-def]
    from openova_sandbox.domain.model import utcnow

    return utcnow()


async def test_a_user_without_an_email_is_named_by_the_subject_as_it_is():
    sessions = sessions_over(MemoryStore())
    quotas = quotas_for(sessions)
    nameless = Principal(sub="User-ABC", org="acme")
    key = quotas.changeable(ADMIN, "user", "User-ABC")
    await quotas.put(ADMIN, key, {"websockets": 0})
    with pytest.raises(QuotaRefused):
        await quotas.hold("websockets", nameless)
    emailed = quotas.changeable(ADMIN, "user", "Dev@Acme.COM")
    assert emailed.name == "dev@acme.com"
