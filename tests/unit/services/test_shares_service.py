"""SharesService writes under optimistic concurrency: a lost race is read again and
the change applied once more, keeping what the other writer stored."""

from __future__ import annotations

import pytest

from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.errors import BackendUnavailable
from openova_sandbox.domain.model import ANNOTATION_SUB, ObjectMeta, Quota, Sandbox, SandboxSpec
from openova_sandbox.domain.principal import Principal
from openova_sandbox.domain.share import ShareRequest, read_shares
from openova_sandbox.events.bus import InProcessBus
from openova_sandbox.services.sessions import SessionsPolicy, SessionsService
from openova_sandbox.services.shares import SharesService
from openova_sandbox.store.memory import MemoryStore

OWNER = Principal(sub="alice", email="alice@acme.com", org="acme")


class RacingStore(MemoryStore):
    """Before each of the caller's first ``races`` updates, another writer updates the
    same object (as the controller would), so the caller's resourceVersion is stale."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races
        self.raced = 0

    async def update(self, sandbox: Sandbox) -> Sandbox | None:
        if self.raced < self.races:
            self.raced += 1
            current = await self.get(sandbox.namespace, sandbox.name)
            others = {**current.metadata.annotations, f"other-{self.raced}": "x"}
            await super().update(current.with_meta(annotations=others))
        return await super().update(sandbox)


async def service(store: MemoryStore) -> SharesService:
    sessions = SessionsService(
        store=store,
        catalogue=load_catalogue(None),
        policy=SessionsPolicy(default_namespace="default", quota=Quota()),
        bus=InProcessBus(),
    )
    await store.create(
        Sandbox(
            metadata=ObjectMeta(
                name="box", namespace="acme", annotations={ANNOTATION_SUB: "alice"}
            ),
            spec=SandboxSpec(owner_email="alice@acme.com", org_slug="acme"),
        )
    )
    return SharesService(store=store, sessions=sessions)


async def test_a_lost_race_is_retried_and_keeps_the_other_write():
    store = RacingStore(races=3)
    shares = await service(store)
    created = await shares.create(OWNER, "box", ShareRequest())
    stored = await store.get("acme", "box")
    assert {"other-1", "other-2", "other-3"} <= set(stored.metadata.annotations)
    assert [s.id for s in read_shares(stored.metadata.annotations)] == [created.share.id]
    store.races += 2  # and revoking loses twice too
    await shares.revoke(OWNER, "box", created.share.id)
    assert read_shares((await store.get("acme", "box")).metadata.annotations) == []


async def test_a_write_that_always_loses_gives_up_with_a_retryable_503():
    store = RacingStore(races=1000)
    shares = await service(store)
    with pytest.raises(BackendUnavailable) as caught:
        await shares.create(OWNER, "box", ShareRequest())
    assert caught.value.code == "sandbox-busy"
    assert read_shares((await store.get("acme", "box")).metadata.annotations) == []
