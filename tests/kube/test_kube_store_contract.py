"""The shared Store contract (tests/contract) run against the Kubernetes store.

The contract's tests are imported unchanged; only the fixtures differ: ``store_factory``
here opens ``KubeStore`` clients on one fake API server (with the Sandbox CRD and the
namespaces the contract uses), so every handle sees the same cluster, as two replicas
of the service would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from contract.conftest import OpenedStores, build_sandbox
from contract.test_store_contract import *  # noqa: F403
from openova_sandbox.domain.model import Sandbox
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube, run_fake_kube

from .conftest import CRD_PATH


class KubeStoreFactory(OpenedStores):
    """Opens ``KubeStore`` handles on one fake cluster."""

    is_sql = False

    def __init__(self, kube: FakeKube) -> None:
        super().__init__()
        self.kube = kube

    async def open(self, *, start: bool = True, **options: Any) -> KubeStore:
        retain = options.pop("retain_events", None)
        if retain is not None:
            self.kube.set_history(int(retain))
        store = KubeStore(kubeconfig_path=str(self.kube.kubeconfig_path), **options)
        kept: KubeStore = await self._keep(store, start=start)
        return kept


@pytest.fixture
def contract_kube() -> Iterator[FakeKube]:
    with run_fake_kube(crds=[CRD_PATH], namespaces=("default", "team-a", "team-b")) as server:
        yield server


@pytest.fixture
async def store_factory(contract_kube: FakeKube) -> AsyncIterator[KubeStoreFactory]:
    factory = KubeStoreFactory(contract_kube)
    yield factory
    await factory.close_all()


@pytest.fixture
async def store(store_factory: KubeStoreFactory) -> KubeStore:
    return await store_factory.open()


@pytest.fixture
def make_sandbox() -> Callable[..., Sandbox]:
    return build_sandbox
