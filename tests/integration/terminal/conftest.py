"""Fixtures for the terminal integration tests (see ``pty_harness``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pty_harness import PtyServer, ServerHandle, start_pty_server, stop_pty_server


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start as many servers as a test needs; all are stopped at the end."""
    started: list[tuple[ServerHandle, asyncio.Task[None], PtyServer]] = []

    async def start(**options: Any) -> PtyServer:
        triple = await start_pty_server(tmp_path, **options)
        started.append(triple)
        return triple[2]

    yield start
    for triple in started:
        await stop_pty_server(*triple)
