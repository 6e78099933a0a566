"""The Kubernetes store's failure mapping (sessions-api.md, "503"), against the fake API
server with injected faults. The Store rules themselves are the shared contract
(test_kube_store_contract.py)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contract.conftest import build_sandbox
from openova_sandbox.domain.errors import (
    BackendForbidden,
    BackendUnavailable,
    Invalid,
    NotFound,
)
from openova_sandbox.store.base import Store
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube, kubeconfig

ONE = r"/namespaces/acme/sandboxes/alpha$"


@pytest.fixture
async def store(kube: FakeKube) -> AsyncIterator[KubeStore]:
    store = KubeStore(kubeconfig_path=str(kube.kubeconfig_path), budget=2.0)
    await store.start()
    await store.create(build_sandbox("alpha", "acme"))
    yield store
    await store.close()


def hits(kube: FakeKube, method: str, pattern: str) -> int:
    return sum(1 for m, p in kube.requests if m == method and re.search(pattern, p))


def test_it_is_a_store() -> None:
    assert isinstance(KubeStore(), Store)


async def test_no_configuration_is_cluster_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    store = KubeStore()
    await store.start()  # starting never fails: each call answers 503 instead
    for call in (store.ping(), store.get("acme", "alpha"), store.list()):
        with pytest.raises(BackendUnavailable) as caught:
            await call
        assert caught.value.code == "sandbox-cluster-unavailable"
        assert caught.value.retry_after == 30
    await store.close()


async def test_missing_crd(bare_kube: FakeKube) -> None:
    store = KubeStore(kubeconfig_path=str(bare_kube.kubeconfig_path))
    await store.start()
    try:
        assert await store.list() == []  # list answers empty, as the spec wants
        for call in (
            store.get("acme", "alpha"),
            store.create(build_sandbox("a", "acme")),
            store.ping(),
        ):
            with pytest.raises(BackendUnavailable) as caught:
                await call
            assert caught.value.code == "sandbox-crd-not-installed"
            assert caught.value.detail == (
                "sandboxes.sandbox.openova.io CRD missing on this cluster"
            )
    finally:
        await store.close()


async def test_connection_refused_is_backend_unavailable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig(f"http://127.0.0.1:{port}"))
    store = KubeStore(kubeconfig_path=str(config), budget=2.0)
    await store.start()
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await store.get("acme", "alpha")
        assert caught.value.code == "sandbox-backend-unavailable"
        assert caught.value.detail == "sandbox backend temporarily unavailable"
    finally:
        await store.close()


async def test_one_5xx_is_retried_on_a_fresh_connection(kube: FakeKube, store: KubeStore) -> None:
    kube.inject(method="GET", path=ONE, status=500)
    got = await store.get("acme", "alpha")
    assert got.name == "alpha"
    assert hits(kube, "GET", ONE) == 2


async def test_two_5xx_are_backend_unavailable(kube: FakeKube, store: KubeStore) -> None:
    kube.inject(method="GET", path=ONE, status=503, times=2)
    with pytest.raises(BackendUnavailable) as caught:
        await store.get("acme", "alpha")
    assert caught.value.code == "sandbox-backend-unavailable"
    assert hits(kube, "GET", ONE) == 2
    assert (await store.get("acme", "alpha")).name == "alpha"  # and it recovers


async def test_a_hung_request_is_retried_within_the_budget(
    kube: FakeKube, store: KubeStore
) -> None:
    kube.inject(method="GET", path=ONE, hang=5.0)
    got = await store.get("acme", "alpha")  # attempt timeout = budget / 2, then retry
    assert got.name == "alpha"
    kube.clear_faults()


async def test_a_server_that_keeps_hanging_costs_one_budget(
    kube: FakeKube, store: KubeStore
) -> None:
    kube.inject(method="GET", path=ONE, hang=5.0, times=3)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await store.get("acme", "alpha")
    assert caught.value.code == "sandbox-backend-unavailable"
    assert time.monotonic() - started < 4.5  # the budget is 2 s; generous for slow CI
    kube.clear_faults()


async def test_creates_are_not_retried_after_a_5xx(kube: FakeKube, store: KubeStore) -> None:
    before = hits(kube, "POST", "/sandboxes$")
    kube.inject(method="POST", path="/sandboxes$", status=500)
    with pytest.raises(BackendUnavailable):
        await store.create(build_sandbox("beta", "acme"))
    assert hits(kube, "POST", "/sandboxes$") == before + 1
    with pytest.raises(NotFound):
        await store.get("acme", "beta")


async def test_forbidden_is_visible_not_a_503(kube: FakeKube, store: KubeStore) -> None:
    kube.inject(method="GET", path=ONE, status=403)
    with pytest.raises(BackendForbidden) as caught:
        await store.get("acme", "alpha")
    assert "Forbidden" in caught.value.detail
    assert not isinstance(caught.value, BackendUnavailable)


async def test_missing_namespace_and_schema_errors_are_invalid(store: KubeStore) -> None:
    with pytest.raises(Invalid) as caught:
        await store.create(build_sandbox("alpha", "nowhere"))
    assert caught.value.code == "namespace-not-found"
    assert '"nowhere"' in caught.value.detail
    bad = build_sandbox("gamma", "acme", org="Not A Slug")
    with pytest.raises(Invalid) as invalid:
        await store.create(bad)
    assert invalid.value.code == "invalid-sandbox"
    assert "spec.owner.orgRef.slug" in invalid.value.detail


async def test_objects_are_real_custom_resources(kube: FakeKube, store: KubeStore) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=kube.url) as http:
        raw = (await http.get("/apis/sandbox.openova.io/v1/namespaces/acme/sandboxes/alpha")).json()
    assert raw["apiVersion"] == "sandbox.openova.io/v1" and raw["kind"] == "Sandbox"
    assert raw["spec"]["owner"] == {"email": "dev@acme.com", "orgRef": {"slug": "acme"}}
    # the ordering annotation is stored but never shown to callers
    assert "sandbox.openova.io/created-at-ns" in raw["metadata"]["annotations"]
    assert (
        "sandbox.openova.io/created-at-ns"
        not in (await store.get("acme", "alpha")).metadata.annotations
    )
