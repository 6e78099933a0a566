"""When each sandbox's previews were last *used*: a request, a response body's chunk or
an open WebSocket through the proxy (api/routes/preview.py; docs/mcp.md, "Previews").

Use through the proxy is the user's activity in the sandbox, as typing in a terminal
is: a sandbox whose owner works in its preview with every terminal closed is not idle.
A preview process merely running is not use: a dev server forgotten in a sandbox must
not keep it up forever.

This is memory only and costs a clock read and a dict write per request (no store
write): embedded mode's controller reads it through ``PreviewHost.last_activity``;
Kubernetes mode's ``KubePreviews`` writes it onto the Sandbox at most once per interval
(the operator decides idleness, in another process). An open WebSocket counts as use
for as long as it is open: :meth:`PreviewUse.last` says "now" while one is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

Key = tuple[str, str]  # (namespace, name)


class PreviewUse:
    """The last use of each sandbox's previews, and the WebSockets open to them."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last: dict[Key, float] = {}
        self._open: dict[Key, int] = {}

    def used(self, namespace: str, name: str) -> None:
        """A request (or a chunk of one's answer) went through the proxy now."""
        self._last[(namespace, name)] = self._clock()

    @contextmanager
    def holding(self, namespace: str, name: str) -> Iterator[None]:
        """An open WebSocket: use for as long as the block runs, and at its end."""
        key = (namespace, name)
        self._open[key] = self._open.get(key, 0) + 1
        self._last[key] = self._clock()
        try:
            yield
        finally:
            left = self._open.get(key, 1) - 1
            if left > 0:
                self._open[key] = left
            else:
                self._open.pop(key, None)
            self._last[key] = self._clock()

    def held(self) -> list[Key]:
        """The sandboxes with a preview WebSocket open now."""
        return list(self._open)

    def last(self, namespace: str, name: str) -> datetime | None:
        """When the sandbox's previews were last used (now while a WebSocket is open);
        ``None``: never, since this process started."""
        key = (namespace, name)
        at = self._clock() if key in self._open else self._last.get(key)
        return None if at is None else datetime.fromtimestamp(at, UTC)

    def forget(self, namespace: str, name: str) -> None:
        """The sandbox is gone (its open sockets, if any, still end their blocks)."""
        self._last.pop((namespace, name), None)


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two times, either of which may be unknown."""
    if a is None or b is None:
        return a or b
    return max(a, b)


__all__ = ["PreviewUse", "latest"]
