"""Leader election on a ``coordination.k8s.io/v1`` Lease, so two operator replicas never
both reconcile.

Why not kopf's peering: it needs kopf's own cluster-wide CRDs, and it only pauses the
other operators, it does not hand over work. A Lease is the Kubernetes primitive the
controller-manager itself uses, needs one RBAC rule, and is visible with ``kubectl get
lease``.

The rules are client-go's:
- The holder renews ``renewTime`` every ``renew_interval`` (5 s); others may take the
  lease when it has not been renewed for ``lease_duration`` (15 s).
- Expiry is judged on the *local* clock from when this replica first saw the current
  record (holder + renewTime), never by comparing the holder's ``renewTime`` with our
  clock: two nodes' clocks may disagree by more than the lease.
- Every write carries the ``resourceVersion`` it was based on, so of two replicas racing
  for a free lease exactly one wins (the other gets 409 Conflict).
- A leader that cannot renew for ``renew_deadline`` (10 s, less than the duration) steps
  down by itself before anyone else may take over; a clean shutdown releases the lease
  (empty holder) so a successor need not wait out the duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import structlog
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
LEASE_NAME = "sandbox-operator"
Lead = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
T = TypeVar("T")


def default_identity() -> str:
    """Pod name (``HOSTNAME`` in a pod) plus randomness: a restarted pod with the same
    name is a new candidate, not the old holder."""
    host = os.environ.get("POD_NAME") or socket.gethostname() or "operator"
    return f"{host}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LeaseView:
    """What the decision needs from a Lease; ``renew_time`` is when the current record
    was first seen locally (see the module docstring)."""

    holder: str
    duration: float
    renew_time: datetime | None


def should_acquire(lease: LeaseView | None, me: str, now: datetime) -> bool:
    """Whether ``me`` may write itself as the holder of ``lease`` at ``now``."""
    if lease is None or not lease.holder or lease.holder == me:
        return True
    if lease.renew_time is None:
        return True
    return now >= lease.renew_time + timedelta(seconds=lease.duration)


def _micro_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ElectionTiming:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    renew_interval: float = 5.0
    retry_interval: float = 2.0


class LeaseElector:
    """Campaign for one Lease and run ``lead`` while holding it.

    ``lead(lost)`` is started on acquiring; ``lost`` is set when the lease is lost or the
    elector stops, and ``lead`` must then return. If ``lead`` returns by itself the
    elector treats it as the end of the process: it releases the lease and returns.
    """

    def __init__(
        self,
        client_factory: Callable[[], AsyncClient],
        *,
        namespace: str,
        name: str = LEASE_NAME,
        identity: str | None = None,
        timing: ElectionTiming | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._client: AsyncClient | None = None
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.timing = timing or ElectionTiming()
        self._clock = clock
        self._on_change = on_change
        self._seen: tuple[str, str] | None = None  # (holder, renewTime) last observed
        self._seen_at: datetime | None = None
        self.leading = False

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # ----- one attempt ----------------------------------------------------------------
    async def _read(self) -> JSON | None:
        try:
            got = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return cast(JSON, got.to_dict())

    def _view(self, lease: JSON) -> LeaseView:
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._seen:
            self._seen, self._seen_at = record, self._clock()
        duration = float(spec.get("leaseDurationSeconds") or self.timing.lease_duration)
        return LeaseView(holder=holder, duration=duration, renew_time=self._seen_at)

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when this elector holds the lease afterwards."""
        now = self._clock()
        current = await self._read()
        spec: JSON = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timing.lease_duration),
            "renewTime": _micro_time(now),
        }
        try:
            if current is None:
                spec |= {"acquireTime": _micro_time(now), "leaseTransitions": 0}
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec,
                }
                await self.client.create(cast(Lease, Lease.from_dict(body)))
                return True
            view = self._view(current)
            if not should_acquire(view, self.identity, now):
                return False
            old = current.get("spec") or {}
            if view.holder == self.identity:
                spec["acquireTime"] = old.get("acquireTime") or _micro_time(now)
                spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0)
            else:
                spec["acquireTime"] = _micro_time(now)
                spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + 1
            body = {**current, "spec": spec}  # carries metadata.resourceVersion
            await self.client.replace(cast(Lease, Lease.from_dict(body)))
            return True
        except ApiError as exc:
            if exc.status.code == 409:
                return False  # someone else wrote first
            raise

    async def release(self) -> None:
        """Give the lease up (only if still ours), so a successor starts at once."""
        current = await self._read()
        spec = (current or {}).get("spec") or {}
        if current is None or spec.get("holderIdentity") != self.identity:
            return
        released = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1}
        with contextlib.suppress(ApiError):
            await self.client.replace(cast(Lease, Lease.from_dict({**current, "spec": released})))
            log.info("leader_released", lease=self.name, identity=self.identity)

    # ----- the loop -------------------------------------------------------------------
    def _set_leading(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            if self._on_change is not None:
                self._on_change(leading)

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except Exception as exc:  # network, 5xx, 403: keep campaigning, say why
            log.warning("leader_election_error", lease=self.name, error=str(exc))
            return False

    async def run(self, lead: Lead, stop: asyncio.Event) -> None:
        """Campaign until ``stop`` is set (or ``lead`` returns by itself)."""
        try:
            while not stop.is_set():
                if await self._campaign_once(stop):
                    if await self._hold(lead, stop):
                        return
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.timing.retry_interval)
        finally:
            self._set_leading(False)
            await self.close()

    async def _campaign_once(self, stop: asyncio.Event) -> bool:
        """One acquisition attempt that gives way to ``stop`` and cannot hang forever."""
        attempt = asyncio.create_task(self._attempt())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait(
            {attempt, stopper},
            timeout=self.timing.lease_duration,
            return_when=asyncio.FIRST_COMPLETED,
        )
        stopper.cancel()
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
            return False
        return attempt.result()

    async def _bounded(self, call: Coroutine[Any, Any, T], renewed: float) -> T | None:
        """``call``'s result, or None when it fails or outlives the renew deadline."""
        left = self.timing.renew_deadline - (time.monotonic() - renewed)
        try:
            return await asyncio.wait_for(call, timeout=max(left, 0.01))
        except Exception:  # TimeoutError, API errors: "not renewed"
            return None

    async def _hold(self, lead: Lead, stop: asyncio.Event) -> bool:
        """Lead until the lease is lost (→ False) or the process should end (→ True)."""
        log.info("leader_acquired", lease=self.name, identity=self.identity)
        self._set_leading(True)
        lost = asyncio.Event()
        task = asyncio.create_task(lead(lost))
        renewed = time.monotonic()
        wait = self.timing.renew_interval
        finished = False
        try:
            while True:
                stopper = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait(
                    {task, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                stopper.cancel()
                if task in done or stop.is_set():
                    finished = True
                    break
                # every call is bounded by what is left of the renew deadline, so a
                # hanging API server cannot keep us acting past it
                if await self._bounded(self._attempt(), renewed):
                    renewed, wait = time.monotonic(), self.timing.renew_interval
                    continue
                wait = self.timing.retry_interval
                if time.monotonic() - renewed >= self.timing.renew_deadline:
                    log.warning("leader_lost", lease=self.name, reason="renew deadline")
                    break
                current = await self._bounded(self._read(), renewed)
                holder = ((current or {}).get("spec") or {}).get("holderIdentity")
                if current is not None and holder != self.identity:
                    log.warning("leader_lost", lease=self.name, reason="taken", holder=holder)
                    break
        finally:
            lost.set()
            failure: BaseException | None = None
            try:
                await task
            except Exception as exc:  # re-raised below, after the lease is given up
                failure = exc
            self._set_leading(False)
        if finished or failure is not None:
            with contextlib.suppress(Exception):
                await self.release()
        if failure is not None:
            raise failure
        return finished


__all__ = [
    "LEASE_NAME",
    "ElectionTiming",
    "LeaseElector",
    "LeaseView",
    "default_identity",
    "should_acquire",
]
