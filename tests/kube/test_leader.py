"""Leader election: the pure decision, then real electors racing on the fake API server.

Proves: only an expired or free lease is taken; of two electors exactly one leads; the
other takes over once the leader stops renewing (crash: no release) and at once after a
clean release; a leader whose lease was taken stops its work. Durations are shortened
(2 s lease) so the run is quick; no assertion depends on how fast anything happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from lightkube import AsyncClient, KubeConfig

from openova_sandbox.controller.kube.leader import (
    ElectionTiming,
    LeaseElector,
    LeaseView,
    default_identity,
    should_acquire,
)
from openova_sandbox.testing.kubeapi import FakeKube

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
LEASES = "/apis/coordination.k8s.io/v1/namespaces/catalyst-system/leases"
FAST = ElectionTiming(
    lease_duration=2.0, renew_deadline=1.5, renew_interval=0.3, retry_interval=0.2
)


@pytest.mark.parametrize(
    ("lease", "me", "now", "expected"),
    [
        (None, "a", NOW, True),  # no lease yet
        (LeaseView("", 15, NOW), "a", NOW, True),  # released
        (LeaseView("a", 15, NOW), "a", NOW, True),  # mine: renew
        (LeaseView("b", 15, NOW), "a", NOW, False),  # fresh, someone else's
        (LeaseView("b", 15, NOW), "a", NOW + timedelta(seconds=14.9), False),
        (LeaseView("b", 15, NOW), "a", NOW + timedelta(seconds=15), True),  # expired
        (LeaseView("b", 15, None), "a", NOW, True),  # never renewed
        (LeaseView("b", 1, NOW), "a", NOW + timedelta(seconds=2), True),
    ],
)
def test_should_acquire(lease: LeaseView | None, me: str, now: datetime, expected: bool) -> None:
    assert should_acquire(lease, me, now) is expected


def test_identities_differ_between_two_starts_of_one_pod() -> None:
    assert default_identity() != default_identity()


@pytest.fixture
def lease_ns(kube: FakeKube) -> Callable[[], AsyncClient]:
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "catalyst-system"}})
    config = KubeConfig.from_file(kube.kubeconfig_path)
    return lambda: AsyncClient(config=config, trust_env=False)


def _elector(factory: Callable[[], AsyncClient], identity: str, **kw: Any) -> LeaseElector:
    return LeaseElector(factory, namespace="catalyst-system", identity=identity, timing=FAST, **kw)


class Worker:
    """A ``lead`` coroutine that records when it runs (stands in for kopf)."""

    def __init__(self) -> None:
        self.running = False
        self.starts = 0

    async def __call__(self, lost: asyncio.Event) -> None:
        self.running = True
        self.starts += 1
        try:
            await lost.wait()
        finally:
            self.running = False


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def test_a_free_lease_goes_to_exactly_one_of_two_racers(
    lease_ns: Callable[[], AsyncClient],
) -> None:
    for round_ in range(5):
        a = LeaseElector(lease_ns, namespace="catalyst-system", name=f"race-{round_}", identity="a")
        b = LeaseElector(lease_ns, namespace="catalyst-system", name=f"race-{round_}", identity="b")
        won = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
        assert sorted(won) == [False, True]
        await a.close()
        await b.close()


async def test_one_leads_and_the_other_takes_over_after_a_crash(
    kube: FakeKube, lease_ns: Callable[[], AsyncClient]
) -> None:
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    work_a, work_b = Worker(), Worker()
    a, b = _elector(lease_ns, "a"), _elector(lease_ns, "b")
    task_a = asyncio.create_task(a.run(work_a, stop_a))
    await until(lambda: work_a.running)
    task_b = asyncio.create_task(b.run(work_b, stop_b))
    try:
        # b campaigns for longer than a lease while a keeps renewing: never both
        for _ in range(30):  # 3 s: more than one lease duration
            assert not (work_a.running and work_b.running)
            assert work_a.running
            await asyncio.sleep(0.1)
        assert work_b.starts == 0 and not b.leading
        lease = httpx.get(f"{kube.url}{LEASES}/sandbox-operator").json()
        assert lease["spec"]["holderIdentity"] == "a"
        assert lease["spec"]["leaseDurationSeconds"] == 2

        task_a.cancel()  # a crash: no renewal, no release
        with contextlib.suppress(asyncio.CancelledError):
            await task_a
        await until(lambda: work_b.running)
        lease = httpx.get(f"{kube.url}{LEASES}/sandbox-operator").json()
        assert lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        stop_b.set()
        await asyncio.wait_for(task_b, 10)
    # a clean stop releases the lease
    lease = httpx.get(f"{kube.url}{LEASES}/sandbox-operator").json()
    assert lease["spec"].get("holderIdentity") is None


async def test_a_released_lease_is_taken_without_waiting_for_expiry(
    lease_ns: Callable[[], AsyncClient],
) -> None:
    slow = ElectionTiming(lease_duration=60, renew_deadline=40, renew_interval=0.3)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    work_a, work_b = Worker(), Worker()
    a = LeaseElector(lease_ns, namespace="catalyst-system", identity="a", timing=slow)
    b = LeaseElector(
        lease_ns,
        namespace="catalyst-system",
        identity="b",
        timing=ElectionTiming(lease_duration=60, renew_deadline=40, retry_interval=0.2),
    )
    task_a = asyncio.create_task(a.run(work_a, stop_a))
    await until(lambda: work_a.running)
    task_b = asyncio.create_task(b.run(work_b, stop_b))
    await asyncio.sleep(0.5)
    assert not work_b.running
    stop_a.set()
    await asyncio.wait_for(task_a, 10)
    # with a 60 s lease, only the release lets b in within the test's timeout
    await until(lambda: work_b.running, timeout=15)
    stop_b.set()
    await asyncio.wait_for(task_b, 10)


async def test_a_leader_whose_lease_is_taken_stops_its_work(
    kube: FakeKube, lease_ns: Callable[[], AsyncClient]
) -> None:
    changes: list[bool] = []
    stop = asyncio.Event()
    work = Worker()
    elector = _elector(lease_ns, "a", on_change=changes.append)
    task = asyncio.create_task(elector.run(work, stop))
    try:
        await until(lambda: work.running)
        # another replica (or an admin) writes itself in with a long lease
        with httpx.Client(base_url=kube.url, timeout=5) as http:
            lease = http.get(f"{LEASES}/sandbox-operator").json()
            lease["spec"]["holderIdentity"] = "intruder"
            lease["spec"]["leaseDurationSeconds"] = 3600
            assert http.put(f"{LEASES}/sandbox-operator", json=lease).status_code == 200
        await until(lambda: not work.running)
        assert changes == [True, False]
        await asyncio.sleep(0.5)
        assert not work.running and work.starts == 1  # keeps campaigning, does not lead
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    lease = httpx.get(f"{kube.url}{LEASES}/sandbox-operator").json()
    assert lease["spec"]["holderIdentity"] == "intruder"  # not released: not ours


async def test_a_lead_that_raises_releases_and_surfaces_the_error(
    kube: FakeKube, lease_ns: Callable[[], AsyncClient]
) -> None:
    async def broken(lost: asyncio.Event) -> None:
        raise RuntimeError("kopf crashed")

    elector = _elector(lease_ns, "a")
    with pytest.raises(RuntimeError, match="kopf crashed"):
        await asyncio.wait_for(elector.run(broken, asyncio.Event()), 10)
    lease = httpx.get(f"{kube.url}{LEASES}/sandbox-operator").json()
    assert lease["spec"].get("holderIdentity") is None


async def test_election_errors_are_survived(
    kube: FakeKube, lease_ns: Callable[[], AsyncClient]
) -> None:
    kube.inject(method="GET", path="/leases/", status=500, times=3)
    stop = asyncio.Event()
    work = Worker()
    task = asyncio.create_task(_elector(lease_ns, "a").run(work, stop))
    try:
        await until(lambda: work.running)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_leader_steps_down_when_the_api_server_hangs(kube: FakeKube) -> None:
    """Renewals that never answer must not keep a leader acting past its renew deadline
    (1.5 s here): otherwise, with the API server back, a successor could act while the
    old leader still does. The client's own timeout (120 s) is far beyond the test's."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "catalyst-system"}})
    config = KubeConfig.from_file(kube.kubeconfig_path)
    stop = asyncio.Event()
    work = Worker()
    elector = LeaseElector(
        lambda: AsyncClient(config=config, trust_env=False, timeout=120),
        namespace="catalyst-system",
        identity="a",
        timing=FAST,
    )
    task = asyncio.create_task(elector.run(work, stop))
    try:
        await until(lambda: work.running)
        kube.inject(path="/leases/sandbox-operator", hang=60, times=1000)
        await until(lambda: not work.running, timeout=20)
        assert not elector.leading
        # and stopping does not wait for the hung campaign request either
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        kube.clear_faults()
        stop.set()
        await asyncio.wait_for(task, 30)
