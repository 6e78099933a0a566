"""What an MCP client hears: every ``notifications/resources/updated`` with when it came,
and the official client subscribed as one sandbox's agent (the live-resource tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp_types as types
from mcp import Client

from openova_sandbox.domain.model import Sandbox
from support.mcp_world import McpWorld


class Updates:
    """Every ``notifications/resources/updated`` a client got, with when it arrived."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str]] = []
        self._arrived = asyncio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.got.append((time.monotonic(), str(message.params.uri)))
            self._arrived.set()

    def uris(self) -> list[str]:
        return [uri for _, uri in self.got]

    async def next_for(self, uri: str, *, after: float, timeout: float = 5.0) -> float:
        """When the first update of ``uri`` that arrived at or after ``after`` came."""
        async with asyncio.timeout(timeout):
            while True:
                for at, got in self.got:
                    if got == uri and at >= after:
                        return at
                self._arrived.clear()
                await self._arrived.wait()


@asynccontextmanager
async def subscriber(world: McpWorld, sandbox: Sandbox) -> AsyncIterator[tuple[Client, Updates]]:
    updates = Updates()
    async with world.client(
        world.mcp_token(sandbox), mode="legacy", message_handler=updates
    ) as client:
        yield client, updates
