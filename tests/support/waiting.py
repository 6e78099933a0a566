"""Waiting for a condition in a test, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    """``check()``'s first truthy answer, asked every 0.1 s; fails naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.1)


async def until(
    what: str, check: Callable[[], Awaitable[Any]], timeout: float = 30.0, every: float = 0.05
) -> Any:
    """``await check()``'s first truthy answer, asked every ``every`` seconds with the
    loop free in between; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        await asyncio.sleep(every)
