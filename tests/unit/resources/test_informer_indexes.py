"""The informer's indexes (issue 11): a caller's list looks at their own objects only,
and gives exactly what a walk over the store with the access rule gives, in the store's
order; the sessions list reads no store once the copy holds the service's own writes."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

from informer_support import eventually

from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.errors import QuotaExceeded
from openova_sandbox.domain.model import ANNOTATION_SUB, ObjectMeta, Quota, Sandbox, SandboxSpec
from openova_sandbox.domain.principal import Principal
from openova_sandbox.domain.quotas import QuotaDefaults
from openova_sandbox.events.bus import InProcessBus
from openova_sandbox.services.quotas import MemoryQuotas, QuotasService
from openova_sandbox.services.sessions import CreateRequest, SessionsPolicy, SessionsService
from openova_sandbox.store.memory import MemoryStore

NAMESPACES = ("acme", "globex")
OWNERS = (("s1", "a@x.io"), ("s2", "b@x.io"), ("", "A@X.io"), ("", "c@x.io"))


def _object(name: str, namespace: str, sub: str, email: str) -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(
            name=name, namespace=namespace, annotations={ANNOTATION_SUB: sub} if sub else {}
        ),
        spec=SandboxSpec(owner_email=email, org_slug="acme", quota=Quota()),
    )


def _service(store: MemoryStore) -> SessionsService:
    return SessionsService(
        store=store,
        catalogue=load_catalogue(None),
        policy=SessionsPolicy(default_namespace="catalyst-system", quota=Quota()),
        bus=InProcessBus(),
    )


async def test_owned_and_in_namespace_equal_a_walk_of_the_store(store, informer_for):
    informer = informer_for(store)
    await informer.start()
    assert await informer.wait_synced(15)
    sessions = _service(store)
    rng = random.Random(11)
    for step in range(300):
        namespace = rng.choice(NAMESPACES)
        name = f"s{rng.randrange(40)}"
        sub, email = rng.choice(OWNERS)
        existing = {s.name: s for s in await store.list(namespace)}
        if name not in existing:
            await store.create(_object(name, namespace, sub, email))
        elif rng.random() < 0.4:
            await store.delete(namespace, name)
        else:  # the owner changes (another subject, or none: by email)
            old = existing[name]
            annotations = {ANNOTATION_SUB: sub} if sub else {}
            await store.update(
                replace(
                    old.with_meta(annotations=annotations),
                    spec=replace(old.spec, owner_email=email),
                )
            )
        if step % 25:
            continue
        newest = max(int(s.metadata.resource_version) for s in await store.list())
        await eventually(lambda newest=newest: informer.applied_version >= newest)
        for ns in NAMESPACES:
            listed = await store.list(ns)
            assert [s.name for s in informer.in_namespace(ns)] == [s.name for s in listed]
            for owner_sub, owner_email in (*OWNERS, ("s3", "")):
                caller = Principal(sub=owner_sub or "nobody", email=owner_email, org=ns)
                walk = [s.name for s in listed if sessions.owns(caller, s)]
                got = informer.owned(ns, sub=caller.sub, email=caller.email)
                assert [s.name for s in got if sessions.owns(caller, s)] == walk


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.lists = 0

    async def list(self, namespace=None, *, labels=None):  # type: ignore[no-untyped-def]
        self.lists += 1
        return await super().list(namespace, labels=labels)


async def test_the_sessions_list_reads_the_copy_and_sees_its_own_writes(informer_for):
    store = CountingStore()
    await store.start()
    try:
        sessions = _service(store)
        informer = informer_for(store)
        sessions.cache = informer
        await informer.start()
        assert await informer.wait_synced(15)
        me = Principal(sub="me", email="me@acme.com", org="acme")
        neighbour = Principal(sub="other", email="other@acme.com", org="acme")
        for i in range(50):
            await store.create(_object(f"n{i}", "acme", "other", "other@acme.com"))
        before = store.lists
        # created and listed at once: the list waits for the copy to hold the create
        made = await sessions.create(me, CreateRequest(agent="aider", name="mine"))
        assert [s.name for s in await sessions.list(me)] == [made.name]
        assert len(await sessions.list(neighbour)) == 50
        await sessions.delete(me, "mine")  # no finalizer: gone at once
        await eventually(lambda: not informer.owned("acme", sub="me", email=""))
        assert await sessions.list(me) == []
        assert store.lists == before  # not one read of the namespace per list
    finally:
        await store.close()


async def test_creates_under_quota_count_from_the_copy(informer_for):
    """The sandboxes quota counts the namespace under its create lock: from the copy
    (holding every earlier create of this service), not a read of the namespace per
    create (which made a burst of a thousand creates quadratic)."""
    store = CountingStore()
    await store.start()
    try:
        sessions = _service(store)
        sessions.quotas = QuotasService(
            MemoryQuotas(),
            QuotaDefaults(user={**QuotaDefaults().user, "sandboxes": 5}),
            namespace_of=sessions.namespace_of,
        )
        informer = informer_for(store)
        sessions.cache = informer
        await informer.start()
        assert await informer.wait_synced(15)
        me = Principal(sub="me", email="me@acme.com", org="acme")
        before = store.lists

        async def make(i: int) -> object:
            try:
                return await sessions.create(me, CreateRequest(agent="aider", name=f"b{i}"))
            except QuotaExceeded as exc:
                return exc

        made = await asyncio.gather(*(make(i) for i in range(8)))
        assert sum(isinstance(m, QuotaExceeded) for m in made) == 3  # exactly the limit kept
        assert len(await store.list("acme")) == 5
        assert store.lists == before + 1  # only the check just above
    finally:
        await store.close()


class LaggingCache:
    """A copy that has not applied anything yet: records the versions lists wait for."""

    def __init__(self) -> None:
        self.waited: list[int] = []

    def in_namespace(self, namespace: str) -> list[Sandbox]:
        return []

    def owned(self, namespace: str, *, sub: str, email: str) -> list[Sandbox]:
        return []

    async def wait_for_version(self, version: int, timeout: float) -> bool:
        self.waited.append(version)
        return version == 0


async def test_a_neighbour_never_waits_for_someone_elses_write() -> None:
    """During a user's burst of creates the copy trails their newest create; before, a
    neighbour's list waited for it (up to a second) and then read the store."""
    store = CountingStore()
    await store.start()
    try:
        sessions = _service(store)
        cache = LaggingCache()
        sessions.cache = cache
        burst = Principal(sub="a", email="a@acme.com", org="acme")
        neighbour = Principal(sub="b", email="b@acme.com", org="acme")
        made = await sessions.create(burst, CreateRequest(agent="aider", name="x1"))
        before = store.lists
        assert await sessions.list(neighbour) == []
        assert cache.waited == [0] and store.lists == before  # from the copy at once
        # the writer waits for its own create (here: the copy never gets it: the store)
        assert [s.name for s in await sessions.list(burst)] == [made.name]
        assert cache.waited[-1] == int(made.metadata.resource_version)
        assert store.lists == before + 1
    finally:
        await store.close()


async def test_a_copy_that_is_not_watching_answers_no_list(informer_for):
    """Before its first list (or while its watch is down) the copy is not the store's:
    a list must read the store (and meet its error) rather than answer an empty copy."""
    store = MemoryStore()
    await store.start()
    try:
        informer = informer_for(store)  # never started: nothing listed
        assert await informer.wait_for_version(0, 0.1) is False
        await informer.start()
        assert await informer.wait_synced(15)
        assert await informer.wait_for_version(0, 0.1) is True
    finally:
        await store.close()
