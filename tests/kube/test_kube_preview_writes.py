"""``KubePreviews`` writes what is wanted on the Sandbox against the fake API server:
each write carries the resourceVersion it read, so concurrent starts on two ports both
land (one is read again and retried) and a conflict is retried; the tools' refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from openova_sandbox.controller.kube.previews import ANNOTATION
from openova_sandbox.domain.errors import Conflict, Invalid, NotFound, QuotaExceeded
from openova_sandbox.domain.model import ObjectMeta, Sandbox, SandboxSpec
from openova_sandbox.services.kube_previews import ANNOTATION_WAKE, KubePreviews
from openova_sandbox.services.previews import PreviewUnavailable
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube

SB = "/apis/sandbox.openova.io/v1/namespaces/acme/sandboxes/dev"


@pytest.fixture
async def made(kube: FakeKube) -> AsyncIterator[tuple[KubePreviews, KubeStore, Sandbox]]:
    store = KubeStore(kubeconfig_path=str(kube.kubeconfig_path))
    await store.start()
    sandbox = await store.create(
        Sandbox(
            metadata=ObjectMeta(name="dev", namespace="acme"),
            spec=SandboxSpec(owner_email="dev@acme.com", org_slug="acme"),
        )
    )
    try:
        yield KubePreviews(store), store, sandbox
    finally:
        await store.close()


def wanted(sandbox: Sandbox) -> list[tuple[int, str, bool]]:
    raw = json.loads(sandbox.metadata.annotations.get(ANNOTATION) or "[]")
    return [(w["port"], w["command"], w["public"]) for w in raw]


async def test_concurrent_starts_both_land_and_a_conflict_is_retried(
    kube: FakeKube, made: tuple[KubePreviews, KubeStore, Sandbox]
) -> None:
    previews, store, sandbox = made
    views = await asyncio.gather(
        *(previews.start_preview(sandbox, port, f"serve {port}", wait=0) for port in (8000, 8001))
    )
    assert [v["status"] for v in views] == ["starting", "starting"]
    assert wanted(await store.get("acme", "dev")) == [
        (8000, "serve 8000", False),
        (8001, "serve 8001", False),
    ]
    puts_before = sum(1 for m, p in kube.requests if m == "PUT" and p == SB)
    kube.inject(method="PUT", path=f"^{SB}$", status=409)
    await previews.start_preview(sandbox, 8002, "serve", wait=0, public=True)
    assert (8002, "serve", True) in wanted(await store.get("acme", "dev"))
    assert sum(1 for m, p in kube.requests if m == "PUT" and p == SB) == puts_before + 2
    stopped = await previews.stop_preview(sandbox, 8001)
    assert (stopped["port"], stopped["status"]) == (8001, "stopped")
    assert [w[0] for w in wanted(await store.get("acme", "dev"))] == [8000, 8002]


async def test_what_the_tools_refuse(made: tuple[KubePreviews, KubeStore, Sandbox]) -> None:
    previews, store, sandbox = made
    await previews.start_preview(sandbox, 8000, "serve", wait=0)
    with pytest.raises(Conflict, match="already has a preview") as exists:
        await previews.start_preview(sandbox, 8000, "other", wait=0)
    assert exists.value.code == "preview-exists"
    for port in (8001, 8002, 8003):
        await previews.start_preview(sandbox, port, "serve", wait=0)
    with pytest.raises(QuotaExceeded) as full:
        await previews.start_preview(sandbox, 8004, "serve", wait=0)
    assert full.value.code == "preview-limit"
    for port, command, code in (
        (80, "x", "invalid-port"),
        ("8000", "x", "invalid-port"),
        (9000, "", "invalid-command"),
        (9000, "x" * 4097, "invalid-command"),
    ):
        with pytest.raises(Invalid) as bad:
            await previews.start_preview(sandbox, port, command, wait=0)
        assert bad.value.code == code
    with pytest.raises(Invalid):
        await previews.start_preview(sandbox, 9000, "x", wait=0, public="yes")
    with pytest.raises(NotFound) as missing:
        await previews.stop_preview(sandbox, 9999)
    assert missing.value.code == "preview-not-found"
    # a sandbox whose annotation someone broke: the tools say so
    current = await store.get("acme", "dev")
    await store.update(current.with_meta(annotations={ANNOTATION: "[{"}))
    with pytest.raises(Conflict) as broken:
        await previews.start_preview(sandbox, 9000, "x", wait=0)
    assert broken.value.code == "previews-annotation-invalid"
    assert previews.list_previews(await store.get("acme", "dev")) == []


async def test_opening_a_suspended_sandboxs_preview_wakes_it(
    kube: FakeKube, made: tuple[KubePreviews, KubeStore, Sandbox]
) -> None:
    previews, store, sandbox = made
    await previews.start_preview(sandbox, 8000, "serve", wait=0)
    current = await store.get("acme", "dev")
    suspended = await store.update_status(
        current.with_status(replace(current.status, phase="Suspended"))
    )
    with pytest.raises(PreviewUnavailable) as waking:
        previews.upstream(suspended, 8000)
    assert waking.value.code == "preview-starting"
    assert "being woken" in waking.value.detail

    async def woken() -> bool:
        found = await store.get("acme", "dev")
        return bool(found.metadata.annotations.get(ANNOTATION_WAKE))

    async with asyncio.timeout(10):
        while not await woken():
            await asyncio.sleep(0.05)
    writes = sum(1 for m, p in kube.requests if m == "PUT" and p == SB)
    with pytest.raises(PreviewUnavailable):
        previews.upstream(suspended, 8000)  # asked again at once: no second write
    await asyncio.gather(*previews._tasks)
    assert sum(1 for m, p in kube.requests if m == "PUT" and p == SB) == writes
    with pytest.raises(NotFound):
        previews.upstream(suspended, 9000)  # no such preview: not woken for it
