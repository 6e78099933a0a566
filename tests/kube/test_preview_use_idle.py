"""Using a preview keeps a Kubernetes sandbox awake (docs/kubernetes.md, the idle
rule under "What the operator creates"; services/kube_previews.py): the API writes the owner's use into the
annotation ``sandbox.openova.io/preview-used-at`` at most once per interval per sandbox,
and the operator's idle rule counts it as activity.

- the pure reconcile by table: recent use keeps a sandbox up and is folded into
  ``status.lastActivityAt``; old use, use of a suspended sandbox (no wake) and a time
  far ahead of the clock do not;
- ``KubePreviews`` against the fake API server: a burst of use is one write; another
  write only an interval later; a replica that finds the stored time recent enough
  writes nothing; an open WebSocket is written every interval while open; the API's
  own service account may write it under the base's RBAC;
- kopf's operator for real: a Ready sandbox whose terminal activity is long past its
  one-minute timeout stays up, pass after pass, while the use is recent, and is
  suspended once it is not;
- the whole path: requests through the API's proxy to a preview in the sandbox's
  (real) terminal server write the annotation once for a burst.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from openova_sandbox.controller.kube.metrics import OperatorMetrics
from openova_sandbox.controller.kube.previews import ANNOTATION, ANNOTATION_USED
from openova_sandbox.controller.kube.reconcile import reconcile
from openova_sandbox.domain.model import ObjectMeta, Sandbox, SandboxSpec, format_time, parse_time
from openova_sandbox.services.kube_previews import KubePreviews
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube
from openova_sandbox.testing.kubeapi_rbac import User
from openova_sandbox.testing.server import free_port
from support.waiting import until

from .samples import NOW
from .test_kube_previews import World, mcp_client, ok, world  # noqa: F401 (a fixture)
from .test_kube_rbac import enforced  # noqa: F401 (a fixture)
from .test_operator import (
    MERGE,
    NS,
    SB,
    make_ready,
    phase_of,
    replicas_of,
    running_operator,
    sample,
    sandbox_body,
    wait_for,
)
from .test_reconcile import CONFIG, _ready_sandbox, as_server, conditions

API = User.service_account("catalyst-system", "sandbox-api")
DEV = "/apis/sandbox.openova.io/v1/namespaces/acme/sandboxes/dev"
SERVE = "exec python3 -m http.server $PORT --bind 127.0.0.1"


def stamp(at: datetime) -> str:
    return format_time(at)


# ---------------------------------------------------------------- the pure rule
def test_recent_preview_use_keeps_a_sandbox_up_and_is_recorded() -> None:
    sb, observed = _ready_sandbox()  # activity at NOW, the default 30 minutes' timeout
    late = NOW + timedelta(minutes=31)
    (sts,) = reconcile(sb, observed, late, CONFIG).apply
    assert sts["spec"]["replicas"] == 0  # without use: idle
    used = sb.with_meta(annotations={ANNOTATION_USED: "2026-01-01T12:20:00Z"})
    plan = reconcile(used, observed, late, CONFIG)
    assert plan.apply == ()  # used eleven minutes ago: up
    assert plan.status is not None and plan.status.phase == "Ready"
    assert plan.status.last_activity_at == datetime(2026, 1, 1, 12, 20, tzinfo=UTC)
    # thirty minutes after the use, idle
    (sts,) = reconcile(used, observed, NOW + timedelta(minutes=51), CONFIG).apply
    assert sts["spec"]["replicas"] == 0
    # use older than the recorded activity changes nothing (no status write)
    older = sb.with_meta(annotations={ANNOTATION_USED: "2026-01-01T11:00:00Z"})
    assert reconcile(older, observed, NOW + timedelta(minutes=5), CONFIG).status is None


def test_use_of_a_suspended_sandbox_does_not_wake_it() -> None:
    sb, observed = _ready_sandbox()
    late = NOW + timedelta(minutes=31)
    plan = reconcile(sb, observed, late, CONFIG)
    (sts,) = plan.apply
    assert plan.status is not None and plan.status.phase == "Suspended"
    suspended = sb.with_status(plan.status)
    scaled = dict(observed.children)
    scaled[("StatefulSet", "pty-server")] = as_server(sts)
    asleep = replace(observed, children=scaled)
    after = suspended.with_meta(annotations={ANNOTATION_USED: stamp(late)})
    assert reconcile(after, asleep, late, CONFIG).empty  # waking is the wake annotation's
    assert ("PtyReady", "False", "Suspended") in conditions(plan)


def test_a_use_time_ahead_of_the_clock() -> None:
    sb, observed = _ready_sandbox()
    late = NOW + timedelta(minutes=31)
    # a little ahead (another machine's clock): counts as now
    skewed = sb.with_meta(annotations={ANNOTATION_USED: stamp(late + timedelta(seconds=20))})
    plan = reconcile(skewed, observed, late, CONFIG)
    assert plan.apply == ()
    assert plan.status is not None and plan.status.last_activity_at == late
    # far ahead (written by hand): ignored, it cannot keep the sandbox up
    forged = sb.with_meta(annotations={ANNOTATION_USED: "2027-01-01T00:00:00Z"})
    (sts,) = reconcile(forged, observed, late, CONFIG).apply
    assert sts["spec"]["replicas"] == 0
    broken = sb.with_meta(annotations={ANNOTATION_USED: "yesterday"})
    (sts,) = reconcile(broken, observed, late, CONFIG).apply
    assert sts["spec"]["replicas"] == 0


# ---------------------------------------------------------------- the API's writes


def puts(kube: FakeKube, path: str = DEV) -> int:
    return sum(1 for method, p in kube.requests if method == "PUT" and p == path)


@pytest.fixture
async def made(kube: FakeKube) -> AsyncIterator[tuple[KubePreviews, KubeStore]]:
    store = KubeStore(kubeconfig_path=str(kube.kubeconfig_path))
    await store.start()
    await store.create(
        Sandbox(
            metadata=ObjectMeta(name="dev", namespace="acme"),
            spec=SandboxSpec(owner_email="dev@acme.com", org_slug="acme"),
        )
    )
    previews = KubePreviews(store)
    try:
        yield previews, store
    finally:
        await previews.stop()
        await store.close()


async def written(store: KubeStore) -> str:
    found = await store.get("acme", "dev")
    return found.metadata.annotations.get(ANNOTATION_USED, "")


async def test_a_burst_of_use_is_one_write_and_the_next_one_an_interval_later(
    kube: FakeKube, made: tuple[KubePreviews, KubeStore]
) -> None:
    previews, store = made
    before = puts(kube)
    started = datetime.now(UTC).replace(microsecond=0)
    for _ in range(200):  # requests and answer chunks through the proxy
        previews.used("acme", "dev")
    first = await until("the annotation", lambda: written(store))
    await asyncio.gather(*previews._tasks)
    assert puts(kube) == before + 1
    assert started <= parse_time(first) <= datetime.now(UTC)  # type: ignore[operator]
    for _ in range(200):
        previews.used("acme", "dev")
    await asyncio.gather(*previews._tasks)
    assert puts(kube) == before + 1  # within the interval: nothing more

    previews.use_interval = 1.0  # the next interval, sooner

    async def moved() -> bool:
        previews.used("acme", "dev")
        return await written(store) != first

    await until("a second write", moved)
    await asyncio.gather(*previews._tasks)
    second = parse_time(await written(store))
    assert second is not None and second - parse_time(first) >= timedelta(seconds=1)  # type: ignore[operator]
    assert puts(kube) == before + 2


async def test_another_replicas_recent_write_is_not_repeated(
    kube: FakeKube, made: tuple[KubePreviews, KubeStore]
) -> None:
    previews, store = made
    previews.used("acme", "dev")
    await until("the annotation", lambda: written(store))
    await asyncio.gather(*previews._tasks)
    writes = puts(kube)
    other = KubePreviews(store)  # a second API replica, its own memory
    try:
        other.used("acme", "dev")
        await asyncio.gather(*other._tasks)
        assert puts(kube) == writes  # it read the stored time: recent enough
    finally:
        await other.stop()
    # a conflict on the write is read again and retried
    stored = await written(store)
    kube.inject(method="PUT", path=f"^{DEV}$", status=409)
    other2 = KubePreviews(store)
    other2.use_interval = 1.0

    async def later() -> bool:
        return datetime.now(UTC) - parse_time(stored) >= timedelta(seconds=1)  # type: ignore[operator]

    await until("a second past the stored use", later)
    other2.used("acme", "dev")
    await asyncio.gather(*other2._tasks)
    assert await written(store) != stored
    assert puts(kube) == writes + 2  # the refused one and its retry
    await other2.stop()


async def test_an_open_websocket_is_written_every_interval_while_open(
    kube: FakeKube, made: tuple[KubePreviews, KubeStore]
) -> None:
    previews, store = made
    previews.use_interval = 1.0
    seen: set[str] = set()

    async def three() -> bool:
        seen.add(await written(store))
        return len(seen - {""}) >= 3

    with previews.holding("acme", "dev"):
        await until("three writes while open", three, timeout=30)
    ticker = previews._ticker
    assert ticker is not None

    async def ended() -> bool:
        return ticker.done()

    await until("the ticker to end with the last socket", ended)
    await asyncio.gather(*previews._tasks)
    assert previews.use.held() == []


def test_the_apis_account_may_write_the_use(
    enforced: FakeKube,  # noqa: F811
) -> None:
    kube = enforced
    api_config = kube.add_user("api-token", API)
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201

        async def use() -> str:  # as the API's service account
            store = KubeStore(kubeconfig_path=str(api_config))
            await store.start()
            previews = KubePreviews(store)
            try:
                previews.used("acme", "alpha")
                await asyncio.gather(*previews._tasks)
                found = await store.get("acme", "alpha")
                return found.metadata.annotations.get(ANNOTATION_USED, "")
            finally:
                await previews.stop()
                await store.close()

        assert parse_time(asyncio.run(use())) is not None
    assert kube.forbidden == []


# ---------------------------------------------------------------- the operator
def passes(metrics: OperatorMetrics) -> float:
    return sum(
        sample(metrics, "sandbox_operator_reconciles_total", result=r)
        for r in ("changed", "unchanged", "conflict", "error")
    )


def test_the_operator_keeps_a_used_sandbox_up_and_suspends_it_once_use_stops(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    metrics = OperatorMetrics()
    with (
        running_operator(kube, metrics=metrics),
        httpx.Client(base_url=kube.url, timeout=5) as http,
    ):
        body = sandbox_body("idle", idleScaling={"enabled": True, "timeoutMinutes": 1})
        assert http.post(SB, json=body).status_code == 201
        make_ready(kube, http, "idle", NS)

        async def use() -> None:  # what the API's proxy calls, writing as the API does
            store = KubeStore(kubeconfig_path=str(kube.kubeconfig_path))
            await store.start()
            previews = KubePreviews(store)
            try:
                previews.used("acme", "idle")
                await asyncio.gather(*previews._tasks)
            finally:
                await previews.stop()
                await store.close()

        asyncio.run(use())
        annotations = http.get(f"{SB}/idle").json()["metadata"]["annotations"]
        used = annotations[ANNOTATION_USED]
        # the terminal server last reported activity five minutes ago
        old = stamp(datetime.now(UTC) - timedelta(minutes=5))
        got = http.patch(
            f"{SB}/idle/status", headers=MERGE, json={"status": {"lastActivityAt": old}}
        )
        assert got.status_code == 200

        def activity() -> str:
            return str(http.get(f"{SB}/idle").json()["status"].get("lastActivityAt", ""))

        # the operator read the use: it is the sandbox's last activity now
        wait_for(lambda: parse_time(activity()) == parse_time(used))
        counted = passes(metrics)
        wait_for(lambda: passes(metrics) >= counted + 3)  # three more decisions
        assert phase_of(http, "idle") == "Ready"
        assert replicas_of(http, NS) == 1
        assert sample(metrics, "sandbox_operator_suspends_total") == 0

        # use stopped five minutes ago, and so did everything else: suspended
        patch = {"metadata": {"annotations": {ANNOTATION_USED: old}}}
        assert http.patch(f"{SB}/idle", headers=MERGE, json=patch).status_code == 200
        got = http.patch(
            f"{SB}/idle/status", headers=MERGE, json={"status": {"lastActivityAt": old}}
        )
        assert got.status_code == 200
        wait_for(lambda: phase_of(http, "idle") == "Suspended")
        wait_for(lambda: replicas_of(http, NS) == 0)


# ---------------------------------------------------------------- the whole path
async def test_requests_through_the_proxy_write_the_use_once_per_interval(
    world: World,  # noqa: F811
) -> None:
    http, client = await mcp_client(world)
    async with http, client:
        port = free_port()
        started = ok(
            await client.call_tool("preview.start", {"port": port, "command": SERVE, "wait": 30})
        )
        assert started["status"] == "listening", started
    assert world.pod is not None
    (world.pod.workdir / "index.html").write_text("used")
    annotations = (await world.sandbox())["metadata"]["annotations"]
    assert ANNOTATION_USED not in annotations  # running, not used: nothing written
    before = puts(world.kube)
    sent = await world.api.get(started["path"], headers=world.auth)
    assert sent.status_code == 307, sent.text
    for _ in range(20):
        page = await world.api.get(f"{sent.headers['location']}index.html")
        assert (page.status_code, page.text) == (200, "used")

    async def stored() -> str:
        found = (await world.sandbox())["metadata"].get("annotations") or {}
        return str(found.get(ANNOTATION_USED, ""))

    first = await until("the use written", stored)
    assert parse_time(first) is not None
    # twenty requests under the capability path: one write, the interval being 30 s
    await until("the write finished", lambda: _settled(world))
    assert puts(world.kube) == before + 1
    wanted = json.loads((await world.sandbox())["metadata"]["annotations"][ANNOTATION])
    assert [w["port"] for w in wanted] == [port]  # the write kept the other annotations


async def _settled(made: World) -> bool:
    previews = made.deps.previews
    assert isinstance(previews, KubePreviews)
    return not previews._tasks
