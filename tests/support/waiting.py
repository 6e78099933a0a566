"""Waiting for a condition in a test, never for a fixed time."""

from __future__ import annotations

import time
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
