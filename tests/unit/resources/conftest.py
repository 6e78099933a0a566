"""Fixtures of the informer tests: a started ``MemoryStore`` and an informer factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from openova_sandbox.services.resources import SandboxInformer
from openova_sandbox.store.memory import MemoryStore


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def informer_for() -> AsyncIterator[Callable[..., SandboxInformer]]:
    """Makes informers with a fast back-off; every one is stopped after the test."""
    made: list[SandboxInformer] = []

    def make(store: MemoryStore, **kw: object) -> SandboxInformer:
        informer = SandboxInformer(store, backoff_initial=0.01, backoff_max=0.05, **kw)  # type: ignore[arg-type]
        made.append(informer)
        return informer

    yield make
    for informer in made:
        await informer.stop()
