"""Sign-outs of token cookies: ``POST /logout`` of a console signed in with a JWT in its
``catalyst_session`` cookie (the embedded issuer's session token, or a token signed in
with at ``/login``).

Such a cookie holds no server-side session to forget: the JWT stays valid until its
``exp``. Logging out clears the cookie, and remembers the token by its ``jti`` (and
``sub``) until it expires, so the cookie is refused from the next request (and so is
the session token a login link minted for it, copied out and presented as a bearer
token; not a token the user signed in with at ``/login``, which may be their CLI's), and
what was
opened *from* that sign-in ends with it: the preview grants minted from it (docs/mcp.md,
"Previews") are refused from the next request, and a terminal or preview WebSocket under
one is closed (:meth:`SignOuts.wait`).

Durable: every sign-out is written through to the store's database (a
:class:`SignOutBackend`: ``store/sql_signouts.py``, SQLite or PostgreSQL, the same
database as the console's OIDC sessions, in Kubernetes mode too) and the unexpired ones
are loaded at start, so a restart forgets none of them. The check itself stays in
memory (it is on every request's path: no database read per request). :meth:`SignOuts.end`
marks the token in memory first (this process refuses it at once, its live connections
end) and then awaits the write; a write that fails raises ``BackendUnavailable``, which
``POST /logout`` answers 503 with the cookie kept, so the sign-out is tried again rather
than reported done while a restart would undo it. Until the stored sign-outs are loaded
(a database unreachable at start: retried every few seconds) :meth:`SignOuts.ended`
raises ``BackendUnavailable`` for a token issued before this process started, or by
another issuer (whose clock may run ahead of ours): such a cookie is answered 503, never
let in unchecked. One this server's own issuer minted since (a sign-in on this server
while its database is down) is checked against this process's memory, which holds
every sign-out of it there can be: the console signs in and serves what needs no
database (the agent catalogue) while the store is down.

Without a backend (``SANDBOX_STORE=memory``, and tests that build bare deps) the
sign-outs are this process's memory only and a restart forgets them; nothing else is
kept across a restart there either.

Other processes' sign-outs (Kubernetes mode: the API replicas on one shared database)
are read while this one runs: once loaded, every :data:`POLL_SECONDS` (2 s, the horizon
of the console's OIDC sessions) it reads the rows recorded since its last read (the
backend numbers each write in the order of the commits, ``recorded``: migration 0008, so
``since(<highest number seen>)`` misses none, whatever the replicas' clocks), remembers
them and wakes what waits on them: a cookie signed out through replica A is refused by
replica B within about 2 s, and a terminal opened with it there closes ``signed-out``.
One indexed read per process every 2 s, never one per request. A read that fails is
logged and tried again at the next turn (meanwhile this process knows the sign-outs read
so far, and its own).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import weakref
from collections.abc import Callable
from typing import Protocol

import structlog

from ..domain.errors import BackendUnavailable
from ..domain.principal import CONSOLE_PURPOSE

log = structlog.get_logger(__name__)

# at most this many sign-outs are remembered in memory; past it the ones expiring first
# go (the database keeps them all until they expire: a restart loads the latest ones)
MAX_REMEMBERED = 100_000
# between two loads of a database that could not be read at start
LOAD_RETRY_SECONDS = 2.0
# between two reads of the sign-outs other processes recorded since (once loaded): the
# horizon within which a sign-out through another API replica is known here
POLL_SECONDS = 2.0
# at most this many rows per read (more are read at once, in turn)
POLL_BATCH = 1_000
NOT_LOADED = "the signed-out sign-ins are not loaded yet; try again shortly"
NOT_RECORDED = (
    "signed out on this server, but the sign-out could not be recorded: it would not "
    "outlive a restart; try again"
)


class SignOutBackend(Protocol):
    """Where sign-outs outlive the process (``store/sql_signouts.py``)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def add(self, sub: str, jti: str, expires_at: float, now: float) -> None: ...
    async def load(self, now: float, limit: int) -> list[tuple[str, str, float]]: ...
    async def prune(self, now: float) -> int: ...
    async def latest(self) -> int: ...
    async def since(self, after: int, limit: int) -> list[tuple[str, str, float, int]]: ...


def _claims(token: str) -> dict[str, object]:
    """A compact JWT's payload, read, not verified: only for a token the authenticator
    has just admitted (``{}`` when it is not one)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def jwt_id(token: str) -> str:
    """The ``jti`` of a compact JWT, ``""`` when it has none."""
    return _jti(_claims(token))


def console_session_jti(token: str) -> str:
    """The ``jti`` of a console sign-in's session token (``purpose`` ``console``: minted
    for the token cookie when a login link was redeemed), ``""`` for any other token."""
    claims = _claims(token)
    return _jti(claims) if claims.get("purpose") == CONSOLE_PURPOSE else ""


def _jti(claims: dict[str, object]) -> str:
    jti = claims.get("jti")
    return jti if isinstance(jti, str) and 0 < len(jti) <= 256 else ""


def issued_here_at(token: str, issuer: str | None) -> float | None:
    """The ``iat`` of a compact JWT that ``issuer`` (this server's own, on this server's
    clock) minted, in seconds; ``None`` for another issuer's token (its clock may be
    ahead of ours) or one without ``iat``."""
    claims = _claims(token)
    iat = claims.get("iat")
    if not issuer or claims.get("iss") != issuer:
        return None
    return float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None


class SignOuts:
    """Token cookies signed out of, by ``(sub, jti)``, until they expire; a lifecycle part
    of the app (:meth:`start` loads the stored ones, :meth:`stop` closes the backend)."""

    def __init__(
        self, clock: Callable[[], float] = time.time, *, backend: SignOutBackend | None = None
    ) -> None:
        self._clock = clock
        self._backend = backend
        # nothing to load without a backend; else set once the stored ones are in memory
        self._loaded = backend is None
        # a token issued from then on can only have been signed out of through this
        # process (which remembers it) until the stored sign-outs are loaded
        self._since = clock()
        self._loading: asyncio.Task[None] | None = None
        self._polling: asyncio.Task[None] | None = None
        # the highest record number read from the backend: the next read is of those above
        self._cursor = 0
        self._ended: dict[tuple[str, str], float] = {}  # (sub, jti) -> the token's exp
        # set when signed out here; kept only while a connection waits on it
        self._events: weakref.WeakValueDictionary[tuple[str, str], asyncio.Event] = (
            weakref.WeakValueDictionary()
        )

    @property
    def loaded(self) -> bool:
        """Whether every stored sign-out is known here (always, without a backend)."""
        return self._loaded

    async def start(self) -> None:
        """Load the stored sign-outs (the expired ones removed first); a database that
        cannot be read now is read again every few seconds, token cookies answered 503
        until then."""
        if self._backend is None or self._loaded:
            return
        try:
            await self._load()
        except BackendUnavailable as exc:
            log.warning("auth.signouts_unreachable_at_start", error=exc.detail)
            self._loading = asyncio.create_task(self._load_until_done(), name="signouts-load")
            return
        self._polling = asyncio.create_task(self._poll(), name="signouts-poll")

    async def stop(self) -> None:
        for task in (self._loading, self._polling):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._loading = self._polling = None
        if self._backend is not None:
            await self._backend.close()

    async def _load(self) -> None:
        assert self._backend is not None
        await self._backend.start()
        now = self._clock()
        removed = await self._backend.prune(now)
        # numbered before the load: what is recorded meanwhile is read again, harmlessly
        self._cursor = await self._backend.latest()
        rows = await self._backend.load(now, MAX_REMEMBERED)
        for sub, jti, expires_at in rows:
            self._remember(sub, jti, expires_at)
        self._loaded = True
        log.info("auth.signouts_loaded", signed_out=len(rows), expired_removed=removed)

    async def _load_until_done(self) -> None:
        while True:
            await asyncio.sleep(LOAD_RETRY_SECONDS)
            try:
                await self._load()
            except BackendUnavailable:
                continue
            self._polling = asyncio.create_task(self._poll(), name="signouts-poll")
            return

    async def _poll(self) -> None:
        """Every :data:`POLL_SECONDS`, remember the sign-outs recorded since the last
        read (through another process: this one's are known already), waking what waits
        on them. A read that fails is logged (once until one succeeds) and tried again
        at the next turn; nothing ends this loop but :meth:`stop`."""
        failing = False
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                read = await self._read_recorded()
            except Exception as exc:  # any failure: the next turn reads again
                if not failing:
                    detail = exc.detail if isinstance(exc, BackendUnavailable) else repr(exc)
                    log.warning("auth.signouts_poll_failed", error=detail)
                failing = True
                continue
            if failing:
                log.info("auth.signouts_poll_recovered", signed_out=read)
            failing = False

    async def _read_recorded(self) -> int:
        """Remember what was recorded since :attr:`_cursor`; how many rows were read."""
        assert self._backend is not None
        read = 0
        while True:
            rows = await self._backend.since(self._cursor, POLL_BATCH)
            for sub, jti, expires_at, number in rows:
                self._remember(sub, jti, expires_at)
                self._cursor = max(self._cursor, number)
            read += len(rows)
            if len(rows) < POLL_BATCH:
                return read

    async def end(self, sub: str, jti: str, expires_at: float) -> None:
        """The token ``jti`` of ``sub`` was signed out of: refused here at once, and
        recorded until it expires. ``BackendUnavailable`` when the record failed (the
        token stays refused by this process, but a restart would forget it)."""
        now = self._clock()
        if not jti or expires_at <= now:
            return
        self._remember(sub, jti, expires_at)
        if self._backend is not None:
            try:
                await self._backend.add(sub, jti, expires_at, now)
            except BackendUnavailable as exc:
                log.warning("auth.signout_not_recorded", sub=sub, error=exc.detail)
                raise BackendUnavailable(NOT_RECORDED, retry_after=5) from exc

    def _remember(self, sub: str, jti: str, expires_at: float) -> None:
        now = self._clock()
        if expires_at <= now:
            return
        if (sub, jti) not in self._ended and len(self._ended) >= MAX_REMEMBERED:
            for key in [k for k, exp in self._ended.items() if exp <= now]:
                del self._ended[key]
            while len(self._ended) >= MAX_REMEMBERED:
                del self._ended[min(self._ended, key=self._ended.__getitem__)]
        self._ended[(sub, jti)] = max(expires_at, self._ended.get((sub, jti), 0.0))
        event = self._events.get((sub, jti))
        if event is not None:
            event.set()

    def ended(self, sub: str, jti: str, issued_at: float | None = None) -> bool:
        """Whether the token ``jti`` of ``sub`` was signed out of (and has not expired).
        While the stored sign-outs are not loaded yet, a token this server's issuer
        minted (``issued_at``: its ``iat``, :func:`issued_here_at`) since this process
        started is answered from memory (it can only have been signed out of here: a
        sign-out elsewhere needs the database this one cannot read, and the logout that
        cannot record it answers 503); an older one, or another issuer's (``None``),
        raises ``BackendUnavailable``: it may have been signed out of before."""
        if not self._loaded and (issued_at is None or issued_at < self._since):
            raise BackendUnavailable(NOT_LOADED, retry_after=int(LOAD_RETRY_SECONDS) + 1)
        return self._known(sub, jti)

    def known(self, sub: str, jti: str) -> bool:
        """Whether this process knows the token ``jti`` of ``sub`` as signed out of (and
        unexpired); unlike :meth:`ended`, never raises: before the stored sign-outs are
        loaded it answers from memory (a bearer token's check, auth/security)."""
        return self._known(sub, jti)

    def _known(self, sub: str, jti: str) -> bool:
        exp = self._ended.get((sub, jti))
        if exp is None:
            return False
        if exp <= self._clock():
            del self._ended[(sub, jti)]
            return False
        return True

    async def wait(self, sub: str, jti: str) -> None:
        """Return once the token ``jti`` of ``sub`` is signed out of (at once if it is)."""
        key = (sub, jti)
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        if self._known(sub, jti):
            return
        await event.wait()
