"""Fixtures that run one test against every Store backend.

- ``store_factory``: parametrized over ``memory``, ``sqlite`` (a file in ``tmp_path``) and
  ``postgres`` (a fresh database on the session's real server). ``open()`` gives a new
  handle on the *same* data (for SQL: a second engine on the same database, as a second
  process would have; for memory: the same instance), so restart and two-writer tests
  need nothing backend-specific. Every handle is closed at teardown.
- ``store``: one started store from that factory.
- ``sql_store_factory``: the same, SQL backends only (durability, restart, polling).
- ``make_sandbox``: builds a valid Sandbox to create.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.domain.model import ObjectMeta, Sandbox, SandboxSpec
from openova_sandbox.store.base import Store
from openova_sandbox.store.memory import MemoryStore
from openova_sandbox.store.sql import SqlStore
from support.postgres import fresh_database

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
SQL_BACKENDS = BACKENDS[1:]


class OpenedStores:
    """What every store factory of the contract does with what it opens: start it when
    asked, and close all of it at the end (newest first)."""

    def __init__(self) -> None:
        self._opened: list[Any] = []

    async def _keep(self, store: Any, *, start: bool) -> Any:
        self._opened.append(store)
        if start:
            await store.start()
        return store

    async def close_all(self) -> None:
        for store in reversed(self._opened):
            await store.close()


class StoreFactory(OpenedStores):
    """Opens stores of one backend over one shared location."""

    def __init__(self, backend: str, url: str | None) -> None:
        super().__init__()
        self.backend = backend
        self.url = url
        self._memory: MemoryStore | None = None

    @property
    def is_sql(self) -> bool:
        return self.url is not None

    async def open(self, *, start: bool = True, **options: Any) -> Store:
        """A store on this factory's data; ``options`` go to the constructor."""
        store: Store
        if self.url is None:
            if self._memory is None or options:
                self._memory = MemoryStore(**options)
            store = self._memory
        else:
            store = SqlStore(self.url, **options)
        kept: Store = await self._keep(store, start=start)
        return kept


async def _factory(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if backend == "memory":
        return StoreFactory(backend, None)
    if backend == "sqlite":
        return StoreFactory(backend, f"sqlite+aiosqlite:///{tmp_path / 'data' / 'sandbox.db'}")
    server_url = request.getfixturevalue("postgres_url")
    return StoreFactory(backend, await fresh_database(server_url))


@pytest.fixture(params=BACKENDS)
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    factory = await _factory(request.param, request, tmp_path)
    yield factory
    await factory.close_all()


@pytest.fixture(params=SQL_BACKENDS)
async def sql_store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    factory = await _factory(request.param, request, tmp_path)
    yield factory
    await factory.close_all()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory.open()


def build_sandbox(
    name: str,
    namespace: str = "team-a",
    *,
    labels: Mapping[str, str] | None = None,
    finalizers: tuple[str, ...] = (),
    email: str = "dev@acme.com",
    org: str = "acme",
    agents: tuple[str, ...] = ("aider",),
) -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(
            name=name, namespace=namespace, labels=dict(labels or {}), finalizers=finalizers
        ),
        spec=SandboxSpec(owner_email=email, org_slug=org, agent_catalogue=agents),
    )


@pytest.fixture
def make_sandbox() -> Callable[..., Sandbox]:
    return build_sandbox
