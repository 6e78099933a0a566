"""Fixtures for the embedded controller: real stores (memory, SQLite file), real git."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from controller_support import ControllerFactory, RecordingTerminals, git

from openova_sandbox.controller.runner import EmbeddedController
from openova_sandbox.store.memory import MemoryStore
from openova_sandbox.store.sql import SqlStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    backend: MemoryStore | SqlStore
    if request.param == "memory":
        backend = MemoryStore()
    else:
        backend = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}", poll_interval=0.2)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def terminals() -> RecordingTerminals:
    return RecordingTerminals()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def git_base(tmp_path: Path) -> Path:
    """``<base>/acme/app.git``: a bare repo holding README.md, made with real git."""
    base = tmp_path / "git"
    work = tmp_path / "src-app"
    work.mkdir()
    git("init", "-q", "-b", "main", str(work))
    (work / "README.md").write_text("hello from acme/app\n")
    git("add", "README.md", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    (base / "acme").mkdir(parents=True)
    git("clone", "-q", "--bare", str(work), str(base / "acme" / "app.git"))
    return base


@pytest.fixture
def controller(
    store: Any, terminals: RecordingTerminals, data_dir: Path, git_base: Path
) -> ControllerFactory:
    @asynccontextmanager
    async def run(**options: Any) -> AsyncIterator[EmbeddedController]:
        options.setdefault("git_base_url", git_base.as_uri())
        options.setdefault("sweep_interval", 0.2)
        ctl = EmbeddedController(
            options.pop("store", store),
            options.pop("terminals", terminals),
            data_dir=data_dir,
            **options,
        )
        await ctl.start()
        try:
            yield ctl
        finally:
            await ctl.stop()

    return run
