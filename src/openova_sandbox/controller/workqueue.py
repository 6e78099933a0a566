"""A per-key work queue: one worker per key at a time, different keys in parallel.

Both controllers run their passes through it: the embedded controller's runner, and the
Kubernetes operator (kube/handlers.py), whose triggers are kopf's watch events.

The controller's rule for concurrency (as in client-go's workqueue and kopf): a Sandbox
is never reconciled by two tasks at once, because its plan was computed from one
observation; but a slow clone of one Sandbox must not hold up another. So every key gets
its own short-lived task, spawned into the owner's task group (structured: stopping the
group stops every worker), and a key queued while its worker runs is marked dirty and run
once more by the same worker, coalescing any number of triggers into one pass.

Requeues after a delay use loop timers; retries after an error back off exponentially
per key, and :meth:`poke` (the sweep) leaves a key alone while it waits out its
back-off; :meth:`add` (a real change) does not. Handlers return the delay after which
to run again (``None``: only on the next trigger) and must not raise: an exception is
logged and retried with back-off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from .scrub import scrub_credentials

log = structlog.get_logger(__name__)

Key = tuple[str, str]
Handler = Callable[[Key], Awaitable[float | None]]
Spawn = Callable[[Coroutine[Any, Any, None]], object]

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0


def backoff_delay(
    failures: int, *, start: float = BACKOFF_START, cap: float = BACKOFF_MAX
) -> float:
    """0.5 s, 1 s, 2 s, ... capped at 30 s (by default)."""
    return float(min(start * 2 ** max(failures - 1, 0), cap))


class WorkQueue:
    def __init__(
        self,
        handler: Handler,
        spawn: Spawn,
        *,
        backoff_start: float = BACKOFF_START,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self._handler = handler
        self._spawn = spawn
        self._backoff = (backoff_start, backoff_max)
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    @property
    def running(self) -> frozenset[Key]:
        return frozenset(self._running)

    def add(self, key: Key) -> None:
        """Run ``key`` now, or once more after its current run."""
        if self._closed:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._running:
            self._dirty.add(key)
            return
        self._running.add(key)
        self._idle.clear()
        try:
            self._spawn(self._work(key))
        except RuntimeError:  # the task group is shutting down
            self._running.discard(key)
            self._closed = True

    def poke(self, key: Key) -> None:
        """:meth:`add`, except for a key waiting out its back-off after a failure: the
        periodic sweep must not turn a 30 s back-off into a retry every sweep."""
        if self.backing_off(key):
            return
        self.add(key)

    def backing_off(self, key: Key) -> bool:
        """``key`` failed and waits for its retry timer."""
        return key in self._failures and key in self._timers

    def busy(self, key: Key) -> bool:
        """A worker runs ``key`` now."""
        return key in self._running

    def add_after(self, key: Key, delay: float) -> None:
        """Run ``key`` after ``delay`` seconds, unless an earlier run is already due."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        existing = self._timers.get(key)
        if existing is not None:
            if existing.when() <= due:
                return
            existing.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def _work(self, key: Key) -> None:
        delay: float | None = None
        try:
            while True:
                self._dirty.discard(key)
                try:
                    delay = await self._handler(key)
                except Exception as exc:  # one sandbox's failure must not stop the others
                    failures = self._failures.get(key, 0) + 1
                    self._failures[key] = failures
                    delay = backoff_delay(failures, start=self._backoff[0], cap=self._backoff[1])
                    log.warning(
                        "controller.reconcile.retry",
                        namespace=key[0],
                        sandbox=key[1],
                        attempt=failures,
                        retry_in=delay,
                        error=scrub_credentials(f"{type(exc).__name__}: {exc}"),
                    )
                else:
                    self._failures.pop(key, None)
                if key not in self._dirty:
                    break
        finally:
            self._running.discard(key)
            if not self._running:
                self._idle.set()
        if delay is not None:
            self.add_after(key, delay)

    async def wait_idle(self) -> None:
        """Until no worker runs (timers still pending do not count)."""
        while self._running:
            await self._idle.wait()

    def close(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
