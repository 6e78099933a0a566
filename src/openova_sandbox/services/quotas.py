"""Quotas per user and per org (issue 11): the checks, the counters, and the routes'
use cases. The vocabulary (names, scopes, parsing, the refusal) is ``domain.quotas``'.

How each quota is counted, and where it is enforced:

- ``sandboxes``: the Sandboxes of the namespace in the store (the org's count) and those
  the caller owns (the user's), read under a per-namespace lock held until the create
  is stored, so two creates racing for the last slot cannot both pass (within one
  process; Kubernetes mode with several API replicas can overshoot by the creates
  that race across replicas, docs/api.md). Checked by ``SessionsService.create`` after
  the name check (409 before 429, as sessions-api.md orders them).
- ``terminals``: the live terminal processes of this server (embedded mode), by their
  sandbox's owner and namespace; checked before a terminal process is started (an
  attach that starts the agent, or a new extra terminal). Kubernetes mode does not
  count them (each pod's own ``concurrentSessions`` limit holds there).
- ``websockets`` / ``waitingAttaches``: counters in this process, taken by the attach
  route for the connection's lifetime / while it waits for Ready, by the connecting
  caller (not the sandbox's owner: a share's viewer uses their own connections).

Overrides are read from the store per namespace and cached for ``CACHE_SECONDS``
(a change made through this process applies at once; through another one, within that
time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Protocol

import structlog

from ..domain import naming
from ..domain.errors import BackendUnavailable, Forbidden, Invalid
from ..domain.ledger import user_key
from ..domain.model import Sandbox, format_time, utcnow
from ..domain.principal import Principal
from ..domain.quotas import (
    QUOTA_SCOPES,
    QUOTAS,
    QuotaDefaults,
    QuotaKey,
    QuotaName,
    QuotaOverride,
    QuotaRefused,
    admits,
    parse_quota_body,
    parse_quota_scope,
    parse_user_name,
)
from ..domain.terminal_wire import CLOSE_TRY_LATER, clip_reason
from .terminal_port import Channel

log = structlog.get_logger(__name__)

CACHE_SECONDS = 5.0
COUNTED: tuple[QuotaName, ...] = ("websockets", "waitingAttaches")


class QuotaStore(Protocol):
    async def quota_overrides(self, namespace: str) -> list[QuotaOverride]: ...
    async def set_quotas(
        self,
        key: QuotaKey,
        values: Mapping[QuotaName, int | None],
        *,
        at: datetime,
        by: str,
    ) -> None: ...


class MemoryQuotas:
    """``QuotaStore`` in memory (``SANDBOX_STORE=memory``)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[QuotaKey, QuotaName], QuotaOverride] = {}

    async def quota_overrides(self, namespace: str) -> list[QuotaOverride]:
        rows = [o for o in self._rows.values() if o.key.namespace == namespace]
        return sorted(rows, key=lambda o: (o.key.scope, o.key.name, o.quota))

    async def set_quotas(
        self,
        key: QuotaKey,
        values: Mapping[QuotaName, int | None],
        *,
        at: datetime,
        by: str,
    ) -> None:
        for quota, value in values.items():
            if value is None:
                self._rows.pop((key, quota), None)
            else:
                self._rows[(key, quota)] = QuotaOverride(key, quota, value, at, by)


class Limits:
    """One user's effective limits and the keys they are counted under."""

    def __init__(
        self,
        org: QuotaKey,
        user: QuotaKey,
        org_limits: Mapping[QuotaName, int | None],
        user_limits: Mapping[QuotaName, int | None],
    ) -> None:
        self.org = org
        self.user = user
        self.org_limits = org_limits
        self.user_limits = user_limits

    def check(self, quota: QuotaName, *, user_usage: int, org_usage: int) -> None:
        """Raise ``QuotaRefused`` unless one more fits both scopes (the user's first)."""
        user_limit = self.user_limits[quota]
        if not admits(user_limit, user_usage):
            assert user_limit is not None
            raise QuotaRefused(self.user, quota, user_limit, user_usage)
        org_limit = self.org_limits[quota]
        if not admits(org_limit, org_usage):
            assert org_limit is not None
            raise QuotaRefused(self.org, quota, org_limit, org_usage)


TerminalCount = Callable[[str, str | None], int]  # (namespace, owner email or None) → live


class QuotasService:
    def __init__(
        self,
        store: QuotaStore,
        defaults: QuotaDefaults | None = None,
        *,
        namespace_of: Callable[[Principal], str],
        sandboxes: Callable[[str], Awaitable[Sequence[Sandbox]]] | None = None,
        owns: Callable[[Principal, Sandbox], bool] | None = None,
        clock: Callable[[], datetime] = utcnow,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        """``sandboxes``/``owns``: how the usage report counts sandboxes (the sessions
        service's store list and ownership rule); ``terminals`` (set by the embedded
        composition): how many terminal processes run."""
        self.store = store
        self.defaults = defaults or QuotaDefaults()
        self._namespace_of = namespace_of
        self._sandboxes = sandboxes
        self._owns = owns
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[list[QuotaOverride], float]] = {}
        self._generation = 0
        self._create_locks: dict[str, asyncio.Lock] = {}
        self._held: dict[tuple[str, str, str], int] = {}  # (quota, namespace, user|"") → n
        self.terminals: TerminalCount | None = None

    # --- limits -----------------------------------------------------------------------

    async def overrides(self, namespace: str) -> list[QuotaOverride]:
        cached = self._cache.get(namespace)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        generation = self._generation
        try:
            rows = await self.store.quota_overrides(namespace)
        except BackendUnavailable as exc:
            # the database is away for a moment: the last overrides known (else the
            # defaults) rather than refusing every attach and terminal meanwhile
            log.warning("quota.overrides_unavailable", namespace=namespace, error=exc.detail)
            return cached[0] if cached is not None else []
        if generation == self._generation:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[namespace] = (rows, time.monotonic() + self._cache_seconds)
        return rows

    async def limits(self, namespace: str, user: str) -> Limits:
        org = QuotaKey("org", namespace, namespace)
        mine = QuotaKey("user", namespace, user)
        org_limits: dict[QuotaName, int | None] = dict(self.defaults.org)
        user_limits: dict[QuotaName, int | None] = dict(self.defaults.user)
        for row in await self.overrides(namespace):
            if row.key == org:
                org_limits[row.quota] = row.value
            elif row.key == mine:
                user_limits[row.quota] = row.value
        return Limits(org, mine, org_limits, user_limits)

    async def limits_of(self, principal: Principal) -> Limits:
        return await self.limits(self._namespace_of(principal), _user(principal))

    # --- sandboxes --------------------------------------------------------------------

    @asynccontextmanager
    async def sandbox_slot(
        self,
        principal: Principal,
        namespace: str,
        existing: Callable[[], Awaitable[Sequence[Sandbox]]],
        owns: Callable[[Sandbox], bool],
        name: str,
        on_taken: Callable[[], Exception],
    ) -> AsyncIterator[None]:
        """Hold the namespace's create lock while the caller stores one more sandbox;
        ``on_taken()`` is raised when ``name`` exists already (409 before 429)."""
        lock = self._create_locks.setdefault(namespace, asyncio.Lock())
        async with lock:
            limits = await self.limits(namespace, _user(principal))
            items = await existing()
            if any(s.name == name for s in items):
                raise on_taken()
            limits.check(
                "sandboxes",
                user_usage=sum(1 for s in items if owns(s)),
                org_usage=len(items),
            )
            yield

    # --- terminals --------------------------------------------------------------------

    def check_terminal(self, limits: Limits, namespace: str, owner_email: str) -> None:
        """Before a terminal process starts in a sandbox of ``owner_email``."""
        if self.terminals is None:
            return
        limits.check(
            "terminals",
            user_usage=self.terminals(namespace, owner_email.strip().lower()),
            org_usage=self.terminals(namespace, None),
        )

    # --- connections ------------------------------------------------------------------

    async def hold(self, quota: QuotaName, principal: Principal) -> Held:
        """Take one ``websockets`` or ``waitingAttaches`` slot of the caller; release it
        with ``release()`` (or as a context manager). ``QuotaRefused`` when full."""
        if quota not in COUNTED:
            raise ValueError(f"{quota} is not counted by holding")
        namespace = self._namespace_of(principal)
        user = _user(principal)
        limits = await self.limits(namespace, user)
        user_slot, org_slot = (quota, namespace, user), (quota, namespace, "")
        limits.check(
            quota,
            user_usage=self._held.get(user_slot, 0),
            org_usage=self._held.get(org_slot, 0),
        )
        for slot in (user_slot, org_slot):
            self._held[slot] = self._held.get(slot, 0) + 1
        return Held(self, (user_slot, org_slot))

    def _release(self, slots: tuple[tuple[str, str, str], ...]) -> None:
        for slot in slots:
            left = self._held.get(slot, 0) - 1
            if left > 0:
                self._held[slot] = left
            else:
                self._held.pop(slot, None)

    def held(self, quota: QuotaName, namespace: str, user: str | None) -> int:
        return self._held.get((quota, namespace, user or ""), 0)

    # --- the routes -------------------------------------------------------------------

    def key(self, principal: Principal, scope: str, name: str) -> QuotaKey:
        """The caller's quota key for ``scope``/``name``: within their own org only."""
        checked = parse_quota_scope(scope)
        namespace = self._namespace_of(principal)
        if checked == "org":
            text = name.strip()
            if text not in {namespace, naming.org_slug(principal.org)}:
                raise Forbidden(
                    f'quotas are read and set within your own org ("{_clip(namespace)}"), '
                    f'not "{_clip(name)}"',
                    code="other-org",
                )
            return QuotaKey("org", namespace, namespace)
        return QuotaKey("user", namespace, parse_user_name(name))

    def _may_read(self, principal: Principal, key: QuotaKey) -> None:
        if principal.is_org_admin or key.scope == "org" or key.name == _user(principal):
            return
        raise Forbidden("org admins read other users' quotas", code="org-admin-required")

    def changeable(self, principal: Principal, scope: str, name: str) -> QuotaKey:
        """Checked before the body is read: a non-admin learns nothing from a body."""
        key = self.key(principal, scope, name)
        if not principal.is_org_admin:
            raise Forbidden("quotas are set by org admins", code="org-admin-required")
        return key

    async def get(self, principal: Principal, scope: str, name: str) -> dict[str, Any]:
        key = self.key(principal, scope, name)
        self._may_read(principal, key)
        return await self._out(key)

    async def put(self, principal: Principal, key: QuotaKey, body: Any) -> dict[str, Any]:
        if not principal.is_org_admin:
            raise Forbidden("quotas are set by org admins", code="org-admin-required")
        values = parse_quota_body(body)
        ceiling = self.defaults.org
        for quota, value in values.items():
            cap = ceiling[quota]
            if value is not None and cap is not None and value > cap:
                raise Invalid(
                    f"{quota} may be at most {cap} (the server's limit for an org); "
                    "ask the operator to raise SANDBOX_QUOTA_ORG",
                    code="invalid-quota",
                )
        by = principal.email or principal.sub
        await self.store.set_quotas(key, values, at=self._clock(), by=by)
        self._generation += 1
        self._cache.pop(key.namespace, None)
        log.info(
            "quota.set",
            scope=key.scope,
            name=key.name,
            namespace=key.namespace,
            values={q: v for q, v in values.items()},
            by=by,
        )
        return await self._out(key)

    async def _out(self, key: QuotaKey) -> dict[str, Any]:
        rows = [o for o in await self.overrides(key.namespace) if o.key == key]
        defaults = self.defaults.for_scope(key.scope)
        limits: dict[QuotaName, int | None] = dict(defaults)
        overridden: dict[QuotaName, int] = {}
        updated: QuotaOverride | None = None
        for row in rows:
            limits[row.quota] = overridden[row.quota] = row.value
            if updated is None or row.updated_at > updated.updated_at:
                updated = row
        return {
            "scope": key.scope,
            "name": key.name,
            "limits": limits,
            "defaults": dict(defaults),
            "overrides": overridden,
            "updatedAt": format_time(updated.updated_at) if updated else None,
            "updatedBy": updated.updated_by if updated else None,
        }

    async def effective(self, principal: Principal) -> dict[str, Any]:
        """The caller's limits (user and org) and what is in use now."""
        limits = await self.limits_of(principal)
        namespace = limits.org.namespace
        user = limits.user.name
        usage: dict[str, dict[QuotaName, int | None]] = {"user": {}, "org": {}}
        if self._sandboxes is not None:
            items = await self._sandboxes(namespace)
            owns = self._owns
            usage["org"]["sandboxes"] = len(items)
            usage["user"]["sandboxes"] = (
                sum(1 for s in items if owns(principal, s)) if owns is not None else None
            )
        else:
            usage["org"]["sandboxes"] = usage["user"]["sandboxes"] = None
        count = self.terminals
        usage["org"]["terminals"] = count(namespace, None) if count else None
        usage["user"]["terminals"] = count(namespace, principal.email.lower()) if count else None
        for quota in COUNTED:
            usage["org"][quota] = self.held(quota, namespace, None)
            usage["user"][quota] = self.held(quota, namespace, user)
        return {
            scope: {
                "name": key.name,
                "limits": dict(scope_limits),
                "usage": {q: usage[scope].get(q) for q in QUOTAS},
            }
            for scope, key, scope_limits in (
                ("user", limits.user, limits.user_limits),
                ("org", limits.org, limits.org_limits),
            )
        }


class Held:
    """Slots taken by ``QuotasService.hold``; ``release()`` gives them back (once).
    ``Held(None, ())`` holds nothing (a server without quotas)."""

    def __init__(
        self, owner: QuotasService | None, slots: tuple[tuple[str, str, str], ...]
    ) -> None:
        self._owner = owner
        self._slots: tuple[tuple[str, str, str], ...] | None = slots

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots and self._owner is not None:
            self._owner._release(slots)

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _user(principal: Principal) -> str:
    return user_key(principal.email, principal.sub)


def _clip(text: str) -> str:
    return text[:64].encode("utf-8", "replace").decode("utf-8")


__all__ = ["QUOTA_SCOPES", "Held", "Limits", "MemoryQuotas", "QuotaStore", "QuotasService"]


async def take_slot(
    quotas: QuotasService | None, quota: QuotaName, caller: Principal, channel: Channel
) -> Held | None:
    """One of the caller's ``quota`` slots for a terminal connection; ``None`` once the
    channel is closed 1013 ``quota-exceeded: <detail>`` (the spec's try-later code, as
    the per-sandbox session limit closes)."""
    if quotas is None:
        return Held(None, ())
    try:
        return await quotas.hold(quota, caller)
    except QuotaRefused as exc:
        log.info("quota.refused", quota=quota, detail=exc.detail)
        await channel.close(CLOSE_TRY_LATER, clip_reason(f"{exc.code}: {exc.detail}"))
        return None
