"""A real embedded app (memory or SQLite store) under uvicorn, and tokens from its issuer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.api.deps import AppDeps
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.store.sql import SqlStore
from openova_sandbox.testing.server import RunningServer, serve_in_thread
from support.fake_agents import write_stand_ins

T = TypeVar("T")


class Api:
    """An HTTP client bound to the running server, with a token minter."""

    def __init__(self, server: RunningServer, data_dir: Path, deps: AppDeps) -> None:
        self.server = server
        self.url = server.url
        self.deps = deps
        self.issuer = EmbeddedIssuer.load(data_dir)
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def token(
        self,
        sub: str = "user-sub-abcdef12",
        email: str = "dev@acme.com",
        org: str = "acme",
        roles: tuple[str, ...] = (),
        ttl: timedelta = timedelta(minutes=5),
        **extra: Any,
    ) -> str:
        return self.issuer.mint(sub=sub, email=email, org=org, roles=roles, ttl=ttl, extra=extra)

    def auth(self, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kw)}"}

    def on_own_store(self, use: Callable[[SqlStore], Awaitable[T]]) -> T:
        """Run ``use`` on the app's SQL database through a store of its own, as something
        other than this app would (the app's store does not see it coming)."""

        async def run() -> T:
            store = SqlStore(self.deps.settings.effective_database_url)
            await store.start()
            try:
                return await use(store)
            finally:
                await store.close()

        return asyncio.run(run())


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> Api:
            # every agent runnable without installing it, unless the test wrote its own rows
            agents = write_stand_ins(tmp_path / "agents.json")
            settings = load_settings(
                data_dir=tmp_path / "data", agents_path=str(agents), **overrides
            )
            deps = build_embedded(settings)
            server = stack.enter_context(serve_in_thread(create_app(deps)))
            api = Api(server, tmp_path / "data", deps)
            stack.callback(api.http.close)
            return api

        yield start


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api(store="memory")
