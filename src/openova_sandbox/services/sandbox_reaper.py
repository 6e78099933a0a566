"""What a sandbox leaves outside its own objects goes with it: its workspace index and its
secrets (issue 14; docs/mcp.md, "Secrets").

Both are keyed by the sandbox's uid. The reaper removes a uid's data

- at once when the informer announces the sandbox ``DELETED`` (finalizers done), and
- in a sweep at start and every :data:`SWEEP_SECONDS`: every uid holding data that is
  not a live sandbox in the store is removed, unless its data is newer than the list the
  sweep compared with (a sandbox created meanwhile). The sweep catches what the events
  missed: a deletion while this process was down, a stream that ended (slow consumer),
  another replica's deletion in Kubernetes mode.

A part that fails (a database that does not answer) is logged and tried again at the
next sweep; nothing else stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from ..domain.errors import SandboxError
from .resources import END_SHUTDOWN, StreamEnd

log = structlog.get_logger(__name__)

SWEEP_SECONDS = 300.0
RETRY_SECONDS = 10.0  # before subscribing again when the informer does not run


class Reapable(Protocol):
    async def forget(self, uid: str) -> Any: ...
    async def known(self) -> dict[str, float]: ...


class SandboxReaper:
    """Removes the data of deleted sandboxes from ``parts``; a background part."""

    def __init__(
        self,
        store: Any,  # store.base.Store
        parts: Sequence[Reapable],
        *,
        informer: Any = None,  # services.resources.SandboxInformer
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        self._store = store
        self._parts = list(parts)
        self._informer = informer
        self._sweep_seconds = sweep_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None and self._parts:
            self._task = asyncio.create_task(self._run(), name="sandbox-reaper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the reaper for the process's life
                log.exception("sandbox_reaper.failed")
                await asyncio.sleep(RETRY_SECONDS)

    async def _round(self) -> None:
        """A sweep, then (with an informer) the deletions it announces until its stream
        ends; without one, the next sweep after the interval."""
        if self._informer is None:
            await self.sweep()
            await asyncio.sleep(self._sweep_seconds)
            return
        running = self._informer.running
        sub = self._informer.subscribe(lambda _sandbox: True)
        try:
            await self.sweep()
            ended = await self._follow(sub)
        finally:
            self._informer.unsubscribe(sub)
        if not running:
            await asyncio.sleep(RETRY_SECONDS)  # not started yet: subscribe again later
        elif ended == END_SHUTDOWN:
            # the server is stopping (end_streams): sweeps only from now on
            log.info("sandbox_reaper.events_ended", reason=ended)
            self._informer = None
        else:
            log.info("sandbox_reaper.resubscribing", reason=ended)  # fell behind

    async def _follow(self, sub: Any) -> str:
        """Remove what each deleted sandbox leaves; sweep when nothing happens for a
        while. Returns why the subscription ended."""
        while True:
            item = await sub.next(timeout=self._sweep_seconds)
            if item is None:
                await self.sweep()
            elif isinstance(item, StreamEnd):
                return item.reason
            elif item.type == "DELETED" and item.object.metadata.uid:
                await self.forget(item.object.metadata.uid)

    async def forget(self, uid: str) -> None:
        for part in self._parts:
            try:
                await part.forget(uid)
            except SandboxError as exc:
                log.warning("sandbox_reaper.forget_failed", sandbox_uid=uid, error=exc.code)

    async def sweep(self) -> int:
        """Remove the data of every uid that is no live sandbox; how many uids went."""
        listed_at = time.time()
        try:
            live = {s.metadata.uid for s in await self._store.list()}
        except SandboxError as exc:
            log.warning("sandbox_reaper.list_failed", error=exc.code)
            return 0
        removed = 0
        for part in self._parts:
            try:
                known = await part.known()
            except SandboxError as exc:
                log.warning("sandbox_reaper.known_failed", error=exc.code)
                continue
            for uid, since in known.items():
                if uid not in live and since < listed_at:
                    try:
                        await part.forget(uid)
                        removed += 1
                    except SandboxError as exc:
                        log.warning("sandbox_reaper.forget_failed", sandbox_uid=uid, error=exc.code)
        return removed
