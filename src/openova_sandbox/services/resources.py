"""The informer behind the console's live views: one in-memory copy of every Sandbox.

List requests are answered from this cache instead of the store, and every change is
fanned out to stream subscribers, so a hundred open consoles cost one store watch.

How the copy is kept (the Kubernetes informer pattern over the ``Store`` protocol):
- *relist*: ``store.list()``; the difference to the current copy is applied and
  announced (ADDED/MODIFIED/DELETED), then ``store.watch(since=<newest
  resourceVersion listed>)`` follows. Replaying changes from that version on is safe:
  any change after it belongs to an object that was deleted before the list, and an
  event older than the copy's version of an object is skipped.
- when that version is already compacted (``Conflict(resource-version-too-old)``) the
  next relist watches with ``since=None`` (a fresh snapshot; objects it repeats at the
  same version are skipped). Any other watch failure relists after a back-off
  (doubling, capped); the store being down never ends the informer.
- ``age_seconds()`` is 0 while the watch is live, else the seconds since the copy was
  last known to be in sync (the moment the watch broke).

Fan-out never blocks the informer: each subscriber has a bounded buffer; one that
falls behind is dropped (it receives a final ``end`` with reason ``slow-consumer`` and
should resume or list again), the others are untouched. ``stop`` ends every
subscription with reason ``shutdown``; ``end_streams`` does the same while the cache
keeps running (for a server about to stop).

Indexes (issue 11: a neighbour's list must not cost a walk over another user's
thousand sandboxes): the copy is also kept by namespace and by owner within a namespace
(the owner's subject when the object records one, else their email, case-folded: the
two ways ``domain.access`` recognises an owner), and in creation order, so ``owned`` and
``in_namespace`` answer from a dict lookup and a sort of the caller's own objects.
``applied_version`` is the newest resourceVersion applied; ``wait_for_version`` lets a
reader wait (bounded) until a write this process made is in the copy.

Resume: every announced change gets the next number of one counter and the id
``<epoch>-<seq>``; the epoch is random, chosen at construction and changed at every
relist after the first, so an id names one unbroken run of the watch in one process.
The last ``history_size`` changes are kept; ``subscribe(accept, after=<id>)`` queues
the accepted ones after that id before the subscription is registered (no await in
between), or says why it cannot (``reset``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog

from ..domain.errors import Conflict
from ..domain.model import ANNOTATION_SUB, Sandbox, utcnow
from ..store.base import EventType, Store, WatchEvent
from .resources_query import Key

log = structlog.get_logger(__name__)

TOO_OLD = "resource-version-too-old"
END_SLOW = "slow-consumer"
END_SHUTDOWN = "shutdown"

HISTORY_SIZE = 1024
# why a resume was refused (the client lists again)
RESET_UNKNOWN = "unknown-id"  # malformed, another epoch, or never issued
RESET_EXPIRED = "history-expired"  # changes after it already left the history
RESET_TOO_FAR = "too-far-behind"  # more visible changes after it than one buffer holds

_EPOCH_BYTES = 6
_EVENT_ID = re.compile(rf"([0-9a-f]{{{_EPOCH_BYTES * 2}}})-(0|[1-9][0-9]{{0,17}})")


def _new_epoch() -> str:
    return secrets.token_hex(_EPOCH_BYTES)


@dataclass(frozen=True)
class ResourceEvent:
    type: EventType
    object: Sandbox
    at: datetime
    seq: int = 0  # the informer's counter: increases with every announced change
    epoch: str = ""  # the informer's run (see the module docstring)

    @property
    def id(self) -> str:
        """The stream id, ``<epoch>-<seq>``: what a client sends back as Last-Event-ID."""
        return f"{self.epoch}-{self.seq}"


@dataclass(frozen=True)
class StreamEnd:
    """The last item a subscription yields: why it ended."""

    reason: str


def _version(sandbox: Sandbox) -> int:
    text = sandbox.metadata.resource_version
    return int(text) if text.isdigit() else 0


_SUB, _EMAIL = "sub:", "email:"


def _owner_key(sandbox: Sandbox) -> str:
    """How ``domain.access`` recognises the owner: the recorded subject, else the email."""
    sub = sandbox.metadata.annotations.get(ANNOTATION_SUB, "").strip()
    if sub:
        return _SUB + sub
    return _EMAIL + sandbox.spec.owner_email.strip().lower()


class Subscription:
    """A bounded buffer of events one consumer has not read yet.

    ``position`` is the id after which this subscription gets every accepted change
    (for a resume, the id it resumed from). ``resumed`` says the buffer starts with the
    replayed changes; ``reset`` is why a requested resume was refused (``None`` when
    none was asked or it succeeded).
    """

    def __init__(
        self,
        *,
        accept: Callable[[Sandbox], bool],
        capacity: int,
        position: str = "",
        replay: list[ResourceEvent] | None = None,
        reset: str | None = None,
    ) -> None:
        self._accept = accept
        self._capacity = capacity
        self._buffer: deque[ResourceEvent] = deque(replay or ())
        self._end: StreamEnd | None = None
        self._wake = asyncio.Event()
        self.position = position
        self.resumed = replay is not None
        self.reset = reset

    @property
    def ended(self) -> bool:
        return self._end is not None

    def offer(self, event: ResourceEvent) -> bool:
        """Queue ``event`` if the consumer may see it; ``False`` when this overflowed it."""
        if self._end is not None or not self._accept(event.object):
            return True
        if len(self._buffer) >= self._capacity:
            self.close(END_SLOW)
            return False
        self._buffer.append(event)
        self._wake.set()
        return True

    def close(self, reason: str) -> None:
        if self._end is None:
            self._end = StreamEnd(reason)
            self._wake.set()

    async def next(self, timeout: float | None = None) -> ResourceEvent | StreamEnd | None:
        """The next event, the end (after the buffered events), or ``None`` on timeout."""
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._end is not None:
                return self._end
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                return None


class SandboxInformer:
    """One cache of every Sandbox, fed by list + watch; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        subscriber_capacity: int = 1024,
        backoff_initial: float = 0.2,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        history_size: int = HISTORY_SIZE,
    ) -> None:
        if history_size < 0:
            raise ValueError("history_size must be 0 or more")
        self._store = store
        self._capacity = subscriber_capacity
        self._history: deque[ResourceEvent] = deque(maxlen=history_size)
        self._epoch = _new_epoch()
        self._seq = 0  # the last number given to a change
        self._epoch_base = 0  # the value of _seq when this epoch began
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._clock = clock
        self._objects: dict[Key, Sandbox] = {}
        # the indexes (see the module docstring): namespace → name → object, (namespace,
        # owner) → name → object, and each key's place in creation order
        self._by_namespace: dict[str, dict[str, Sandbox]] = {}
        self._by_owner: dict[tuple[str, str], dict[str, Sandbox]] = {}
        self._born: dict[Key, int] = {}
        self._births = 0
        self._applied = 0  # the newest resourceVersion applied to the copy
        self._advanced = asyncio.Event()  # set (and replaced) when _applied moves
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live = False
        self._synced_once = asyncio.Event()
        self._last_sync: float | None = None
        self.relists = 0  # how many times the copy was rebuilt from a list (observability)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._run(), name="sandbox-informer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._mark_lost()
        self._end_all(END_SHUTDOWN)

    def end_streams(self) -> None:
        """End every subscription (reason ``shutdown``) but keep the cache running.

        For a server that is about to stop: uvicorn waits for open responses *before*
        it runs the lifespan shutdown, so streams must be ended first. Safe to call from
        any thread (it hops onto the informer's loop).
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            self._end_all(END_SHUTDOWN)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._end_all(END_SHUTDOWN)
        else:
            loop.call_soon_threadsafe(self._end_all, END_SHUTDOWN)

    def _end_all(self, reason: str) -> None:
        for sub in list(self._subscribers):
            sub.close(reason)
        self._subscribers.clear()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # --- reads ------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced_once.is_set()

    async def wait_synced(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._synced_once.wait()
        except TimeoutError:
            return False
        return True

    @property
    def live(self) -> bool:
        """Listed and watching: the copy follows the store as it changes."""
        return self._live

    def age_seconds(self) -> float:
        if self._live or self._last_sync is None:
            return 0.0
        return max(0.0, self._clock() - self._last_sync)

    def items(self) -> list[Sandbox]:
        """Every cached object, ordered by (namespace, name)."""
        return [self._objects[k] for k in sorted(self._objects)]

    def in_namespace(self, namespace: str) -> list[Sandbox]:
        """The namespace's objects, newest first (the store's list order)."""
        return self._newest_first((self._by_namespace.get(namespace) or {}).values())

    def owned(self, namespace: str, *, sub: str, email: str) -> list[Sandbox]:
        """Candidates for "owned by this caller" in ``namespace``, newest first: objects
        recording ``sub`` as their owner's subject, and objects recording none whose
        owner email is ``email``. The caller still applies the access rule; this only
        keeps it from looking at everyone else's objects."""
        found: list[Sandbox] = []
        if sub:
            found += (self._by_owner.get((namespace, _SUB + sub)) or {}).values()
        folded = email.strip().lower()
        if folded:
            found += (self._by_owner.get((namespace, _EMAIL + folded)) or {}).values()
        return self._newest_first(found)

    def _newest_first(self, objects: Iterable[Sandbox]) -> list[Sandbox]:
        born = self._born
        return sorted(objects, key=lambda s: born.get(s.key, 0), reverse=True)

    @property
    def applied_version(self) -> int:
        return self._applied

    async def wait_for_version(self, version: int, timeout: float) -> bool:
        """Until the copy holds every change up to ``version`` (``False`` on timeout,
        before the first list and while the watch is down: the copy cannot answer)."""
        if not self._live:
            return False
        deadline = time.monotonic() + timeout
        while self._applied < version:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._live:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._advanced.wait()
            except TimeoutError:
                return self._applied >= version
        return True

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def position(self) -> str:
        """The id of the last announced change (``<epoch>-<seq>``); a stream that
        starts now gets every change after it."""
        return f"{self._epoch}-{self._seq}"

    def subscribe(
        self, accept: Callable[[Sandbox], bool], *, after: str | None = None
    ) -> Subscription:
        """A new subscription to the changes ``accept`` lets through.

        With ``after`` (a Last-Event-ID), the subscription first holds every accepted
        change after that id, then the live ones: the replay is queued and the
        subscription registered with no await in between, so nothing is missed or
        repeated. If that is impossible the subscription starts fresh and ``reset``
        says why (``unknown-id``, ``history-expired``, ``too-far-behind``).
        """
        if after is None:
            sub = Subscription(accept=accept, capacity=self._capacity, position=self.position)
        else:
            replay, reason = self._changes_after(after, accept)
            if replay is None:
                sub = Subscription(
                    accept=accept, capacity=self._capacity, position=self.position, reset=reason
                )
            else:
                sub = Subscription(
                    accept=accept, capacity=self._capacity, position=after, replay=replay
                )
        if self._task is None:
            sub.close(END_SHUTDOWN)
        else:
            self._subscribers.add(sub)
        return sub

    def _changes_after(
        self, token: str, accept: Callable[[Sandbox], bool]
    ) -> tuple[list[ResourceEvent] | None, str]:
        """The accepted changes after ``token``, or ``None`` and the reason for a reset."""
        match = _EVENT_ID.fullmatch(token)
        if match is None or match[1] != self._epoch:
            return None, RESET_UNKNOWN
        seq = int(match[2])
        if not self._epoch_base <= seq <= self._seq:
            return None, RESET_UNKNOWN  # never issued in this epoch
        oldest = self._history[0].seq if self._history else self._seq + 1
        if seq + 1 < oldest:
            return None, RESET_EXPIRED
        replay = [
            e for e in itertools.islice(self._history, seq + 1 - oldest, None) if accept(e.object)
        ]
        if len(replay) > self._capacity:
            return None, RESET_TOO_FAR
        return replay, ""

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    # --- the loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._backoff_initial
        fresh_snapshot = False
        while True:
            try:
                since = await self._relist()
                if fresh_snapshot:
                    since, fresh_snapshot = None, False
                delay = self._backoff_initial
                async for event in self._store.watch(since):
                    self._apply(event)
                log.info("sandbox watch ended; relisting")
                self._mark_lost()
            except asyncio.CancelledError:
                raise
            except Conflict as exc:
                self._mark_lost()
                if exc.code != TOO_OLD:
                    log.warning("sandbox watch failed; relisting", error=exc.detail)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._backoff_max)
                    continue
                log.info("sandbox watch fell behind the store's history; relisting")
                if fresh_snapshot:  # twice in a row: do not spin
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._backoff_max)
                fresh_snapshot = True
                continue
            except Exception as exc:
                self._mark_lost()
                log.warning(
                    "sandbox informer failed; retrying",
                    error_type=type(exc).__name__,
                    error=str(exc),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def _relist(self) -> str | None:
        listed = await self._store.list()
        now = utcnow()
        if self.relists:
            # Every relist after the first starts a new epoch: ids issued before the
            # watch broke no longer resume (what changed in the gap is only known as the
            # difference below, not as the real changes). The first one announces the
            # whole store to ids of the epoch chosen at construction.
            self._epoch = _new_epoch()
            self._epoch_base = self._seq
            self._history.clear()
        fresh = {s.key: s for s in listed}
        for sandbox in reversed(listed):  # listed newest first: births oldest first
            if sandbox.key not in self._born:
                self._births += 1
                self._born[sandbox.key] = self._births
        for key in sorted(set(self._objects) - set(fresh)):
            gone = self._objects[key]
            self._remove(key)
            self._fan_out("DELETED", gone, now)
        for key in sorted(fresh):
            new, old = fresh[key], self._objects.get(key)
            if old is not None and _version(old) == _version(new):
                continue
            self._put(new)
            self._fan_out("ADDED" if old is None else "MODIFIED", new, now)
        self._advance(max((_version(s) for s in listed), default=0))
        self.relists += 1
        self._live = True
        self._last_sync = self._clock()
        self._synced_once.set()
        newest = max((_version(s) for s in listed), default=0)
        log.info("sandbox cache listed", objects=len(fresh), resource_version=newest)
        return str(newest) if listed else None

    def _apply(self, event: WatchEvent) -> None:
        obj = event.object
        key = obj.key
        current = self._objects.get(key)
        version = event.resource_version
        self._advance(int(version) if version.isdigit() else _version(obj))
        if current is not None and _version(current) >= _version(obj):
            return  # a replay of something the copy already has
        if event.type == "DELETED":
            if current is None:
                return
            self._remove(key)
            self._fan_out("DELETED", obj, utcnow())
            return
        if current is None:
            self._births += 1
            self._born[key] = self._births
        self._put(obj)
        self._fan_out("ADDED" if current is None else "MODIFIED", obj, utcnow())

    def _put(self, obj: Sandbox) -> None:
        key = obj.key
        old = self._objects.get(key)
        if old is not None and _owner_key(old) != _owner_key(obj):
            self._unindex(old)
        self._objects[key] = obj
        self._by_namespace.setdefault(obj.namespace, {})[obj.name] = obj
        self._by_owner.setdefault((obj.namespace, _owner_key(obj)), {})[obj.name] = obj
        self._born.setdefault(key, 0)

    def _remove(self, key: Key) -> None:
        old = self._objects.pop(key, None)
        self._born.pop(key, None)
        if old is not None:
            self._unindex(old)

    def _unindex(self, old: Sandbox) -> None:
        names = self._by_namespace.get(old.namespace)
        if names is not None and names.pop(old.name, None) is not None and not names:
            del self._by_namespace[old.namespace]
        owner = (old.namespace, _owner_key(old))
        owned = self._by_owner.get(owner)
        if owned is not None and owned.pop(old.name, None) is not None and not owned:
            del self._by_owner[owner]

    def _advance(self, version: int) -> None:
        if version > self._applied:
            self._applied = version
            self._advanced.set()
            self._advanced = asyncio.Event()

    def _fan_out(self, type_: EventType, obj: Sandbox, at: datetime) -> None:
        self._seq += 1
        event = ResourceEvent(type_, obj, at, self._seq, self._epoch)
        self._history.append(event)
        for sub in list(self._subscribers):
            if not sub.offer(event):
                self._subscribers.discard(sub)
                log.warning("stream subscriber fell behind; dropped", capacity=self._capacity)

    def _mark_lost(self) -> None:
        if self._live:
            self._live = False
            self._last_sync = self._clock()
