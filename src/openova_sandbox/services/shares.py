"""The share-link use cases: create, list, revoke, use (``access``) and watch for
revocation (``wait_revoked``). Rules in ``domain.share``; see docs/shares.md.

Managing a sandbox's shares takes what seeing it takes (the owner, or an org admin of
its namespace); anyone else gets the same 404 as for the sandbox. Using a share takes a
signed-in caller of the sandbox's namespace and the link's token: the sandbox is looked
up in the caller's own namespace, so another org's user never finds it.

Shares live in an annotation of the Sandbox, written with the object's resourceVersion:
a ``Conflict`` (someone else wrote first, the controller included) means read again and
apply the change once more. Every write drops expired shares.

Revocation wakes ``wait_revoked`` waiters of this process at once; a waiter also reads
the store every ``poll_seconds``, so a revocation made through another replica (or the
sandbox's deletion) ends it too.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from ..domain.errors import BackendUnavailable, Conflict, Forbidden, NotFound
from ..domain.model import Sandbox, format_time, utcnow
from ..domain.principal import Principal
from ..domain.share import (
    MAX_LIVE_SHARES,
    Share,
    ShareRequest,
    find_by_token,
    live,
    read_shares,
    write_shares,
)
from ..store.base import Store
from .sessions import SessionsService

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 8  # writes retried on Conflict before giving up
POLL_SECONDS = 15.0
REMEMBERED = 4096  # share ids kept for waiters (where it lives) and as revoked

SHARE_NOT_FOUND = "share-not-found"
SHARE_EXPIRED = "share-expired"
SHARE_LIMIT = "share-limit"
SANDBOX_DELETING = "sandbox-deleting"


Change = Callable[[list[Share]], list[Share]]  # stored shares → shares to store


@dataclass(frozen=True)
class SharedAccess:
    """What a valid share link opens: the sandbox, in ``mode``, until ``expires_at``."""

    sandbox: Sandbox
    mode: str
    share_id: str
    expires_at: datetime


@dataclass(frozen=True)
class CreatedShare:
    share: Share
    token: str  # in clear only here, once


class _Bounded(OrderedDict[str, tuple[str, str]]):
    def remember(self, key: str, value: tuple[str, str]) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > REMEMBERED:
            self.popitem(last=False)


class SharesService:
    def __init__(
        self,
        *,
        store: Store,
        sessions: SessionsService,
        clock: Callable[[], datetime] = utcnow,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._clock = clock
        self._poll = poll_seconds
        self._events: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )
        self._revoked: OrderedDict[str, None] = OrderedDict()
        self._where = _Bounded()  # share id → (namespace, sandbox) for waiters' polls

    # ------------------------------------------------------------------ managing
    async def create(
        self, caller: Principal, sandbox_id: str, request: ShareRequest
    ) -> CreatedShare:
        sandbox = await self._sessions.get(caller, sandbox_id)
        if sandbox.deleting:
            raise Conflict(f'sandbox "{sandbox.name}" is being deleted', code=SANDBOX_DELETING)
        by = caller.email or caller.sub
        share, token = Share.issue(request, created_by=by, now=self._clock())

        def add(shares: list[Share]) -> list[Share]:
            kept = live(shares, self._clock())
            if len(kept) >= MAX_LIVE_SHARES:
                raise Conflict(
                    f'sandbox "{sandbox.name}" already has {len(kept)} live share links, the '
                    f"most it may have ({MAX_LIVE_SHARES}); revoke one or let one expire",
                    code=SHARE_LIMIT,
                )
            return [*kept, share]

        await self._write(caller, sandbox, add)
        self._where.remember(share.id, sandbox.key)
        log.info(
            "share.created",
            sandbox=sandbox.name,
            namespace=sandbox.namespace,
            share=share.id,
            mode=share.mode,
            expires_at=format_time(share.expires_at),
            by=by,
        )
        return CreatedShare(share=share, token=token)

    async def list(self, caller: Principal, sandbox_id: str) -> list[Share]:
        """The sandbox's live shares, oldest first."""
        sandbox = await self._sessions.get(caller, sandbox_id)
        return live(read_shares(sandbox.metadata.annotations), self._clock())

    async def revoke(self, caller: Principal, sandbox_id: str, share_id: str) -> None:
        """Remove the share (404 ``share-not-found`` when the sandbox has no such share)
        and end its viewers (``wait_revoked``)."""
        sandbox = await self._sessions.get(caller, sandbox_id)

        def remove(shares: list[Share]) -> list[Share]:
            if not any(s.id == share_id for s in shares):
                raise NotFound(
                    f'sandbox "{sandbox.name}" has no share "{share_id}"', code=SHARE_NOT_FOUND
                )
            return [s for s in live(shares, self._clock()) if s.id != share_id]

        await self._write(caller, sandbox, remove)
        self._mark_revoked(share_id)
        log.info(
            "share.revoked",
            sandbox=sandbox.name,
            namespace=sandbox.namespace,
            share=share_id,
            by=caller.email or caller.sub,
        )

    async def _write(
        self,
        caller: Principal,
        sandbox: Sandbox,
        change: Change,
    ) -> None:
        """Apply ``change`` to the stored shares, re-reading on a lost race."""
        current = sandbox
        for _ in range(MAX_ATTEMPTS):
            annotations = current.metadata.annotations
            shares = change(read_shares(annotations))
            try:
                await self._store.update(
                    current.with_meta(annotations=write_shares(annotations, shares))
                )
                return
            except (Conflict, NotFound):
                current = await self._reread(caller, sandbox)
        raise BackendUnavailable(
            f'sandbox "{sandbox.name}" kept changing while its shares were written; try again',
            code="sandbox-busy",
            retry_after=1,
        )

    async def _reread(self, caller: Principal, sandbox: Sandbox) -> Sandbox:
        try:
            return await self._store.get(sandbox.namespace, sandbox.name)
        except NotFound:
            # deleted under us: the same answer as when it was never there
            return await self._sessions.get(caller, sandbox.name)

    # ------------------------------------------------------------------ using
    async def access(self, caller: Principal, sandbox_id: str, token: str) -> SharedAccess:
        """What ``token`` opens on ``sandbox_id`` for ``caller``. Raises ``NotFound``
        (``share-not-found``) when the sandbox is not in the caller's namespace, does not
        exist, or holds no share for this token (revoked, or never issued) — one answer,
        so a link says nothing about sandboxes it does not open — and ``Forbidden``
        (``share-expired``) when the share it names has expired."""
        namespace = self._sessions.namespace_of(caller)
        not_found = NotFound(
            f'no share of sandbox "{sandbox_id}" in namespace "{namespace}" matches this '
            "link: it was revoked, or the sandbox is gone (a link only opens for users of "
            "the sandbox's organization)",
            code=SHARE_NOT_FOUND,
        )
        if not token:
            raise not_found
        try:
            sandbox = await self._store.get(namespace, sandbox_id)
        except NotFound:
            raise not_found from None
        share = find_by_token(read_shares(sandbox.metadata.annotations), token)
        if share is None or share.id in self._revoked:
            raise not_found
        if share.expired(self._clock()):
            raise Forbidden(
                f"this share link expired at {format_time(share.expires_at)}; ask the "
                "sandbox's owner for a new one",
                code=SHARE_EXPIRED,
            )
        self._where.remember(share.id, sandbox.key)
        return SharedAccess(
            sandbox=sandbox, mode=share.mode, share_id=share.id, expires_at=share.expires_at
        )

    # ------------------------------------------------------------------ revocation
    def revoked(self, share_id: str) -> asyncio.Event:
        """An event set when ``share_id`` is revoked through this process (already set
        when it was). Hold on to it while waiting: it is forgotten once unreferenced."""
        event = self._events.get(share_id)
        if event is None:
            event = asyncio.Event()
            self._events[share_id] = event
        if share_id in self._revoked:
            event.set()
        return event

    async def wait_revoked(self, share_id: str) -> None:
        """Return once ``share_id`` is revoked: at once for a revocation through this
        process, within ``poll_seconds`` for one made elsewhere (another replica) or
        when the share or its sandbox is no longer stored. Expiry is not revocation: the
        caller ends an expired viewer itself (``SharedAccess.expires_at``)."""
        event = self.revoked(share_id)
        while not event.is_set():
            try:
                await asyncio.wait_for(event.wait(), self._poll)
                return
            except TimeoutError:
                pass
            if await self._gone(share_id):
                self._mark_revoked(share_id)
                return

    async def _gone(self, share_id: str) -> bool:
        where = self._where.get(share_id)
        if where is None:
            return False  # never seen here: nothing to check against
        try:
            sandbox = await self._store.get(*where)
        except NotFound:
            return True
        except BackendUnavailable:
            return False  # unknown: keep waiting, check again later
        return all(s.id != share_id for s in read_shares(sandbox.metadata.annotations))

    def _mark_revoked(self, share_id: str) -> None:
        self._revoked[share_id] = None
        while len(self._revoked) > REMEMBERED:
            self._revoked.popitem(last=False)
        self._where.pop(share_id, None)
        event = self._events.get(share_id)
        if event is not None:
            event.set()
