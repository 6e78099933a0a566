"""Personal access tokens (issue 11): create, list, revoke, and authenticate with one.

The rules of the tokens themselves (format, hashing, what a token speaks for) are
``domain.access_tokens``'; this is the use cases and the authenticator in front of the
JWT one:

- **create**: a caller signed in with a JWT (a token cannot mint tokens: a leaked one
  would otherwise outlive its own expiry) names the token and may ask for an expiry in
  days (default ``SANDBOX_PAT_DEFAULT_DAYS``, at most ``SANDBOX_PAT_MAX_DAYS``); at most
  ``MAX_TOKENS_PER_USER`` usable tokens per user. The answer carries the token, once.
- **list**: the caller's own tokens (``scope=org``: an org admin's view of every token
  of the org), never the token or its digest; expired ones are listed as expired until
  they are purged 30 days later.
- **revoke**: by id, the token's owner or an org admin of its org; someone else's token
  is not found (existence never leaks). Idempotent for the owner.
- **authenticate**: ``PatAuthenticator`` takes every credential that starts with the
  prefix and passes the rest to the JWT authenticator. A token's record is cached per
  process for ``CACHE_SECONDS`` (a revoke in this process applies at once, one in
  another process within that time). Its last use is written at most once a minute.
- **connections**: a terminal WebSocket opened with a token ends when it is revoked
  (``wait_revoked``: at once through this process, else at the next look at the store),
  and so do the preview grants minted from it (``revoked``, on each request).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from ..domain.access_tokens import (
    DEFAULT_TTL_DAYS,
    MAX_TOKENS_PER_USER,
    MAX_TTL_DAYS,
    AccessToken,
    hash_token,
    identity_of,
    is_token_id,
    looks_like_token,
    new_token,
    parse_token_name,
    parse_ttl_days,
    well_formed,
)
from ..domain.errors import (
    Forbidden,
    Invalid,
    NotFound,
    QuotaExceeded,
    SandboxError,
    Unauthenticated,
)
from ..domain.model import format_time, utcnow
from ..domain.principal import Principal

log = structlog.get_logger(__name__)

CACHE_SECONDS = 2.0
# a connection opened with a token ends when the token is revoked: at once when revoked
# through this process, within this many seconds when through another one
REVOKED_CHECK_SECONDS = 30.0
REASON_TOKEN_REVOKED = "token-revoked"
CACHE_ENTRIES = 10_000
TOUCH_EVERY = timedelta(minutes=1)
PURGE_AFTER = timedelta(days=30)


class TokenStore(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def add_token(self, token: AccessToken, digest: str, *, max_active: int) -> bool: ...
    async def find_token(self, digest: str) -> AccessToken | None: ...
    async def get_token(self, token_id: str) -> AccessToken | None: ...
    async def list_tokens(self, org: str, owner_sub: str | None) -> list[AccessToken]: ...
    async def revoke_token(self, token_id: str, at: datetime) -> bool: ...
    async def touch_token(self, token_id: str, at: datetime, *, older_than: datetime) -> None: ...
    async def purge_tokens(self, before: datetime) -> int: ...


class MemoryTokens:
    """``TokenStore`` in memory (``SANDBOX_STORE=memory``)."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[AccessToken, str]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def add_token(self, token: AccessToken, digest: str, *, max_active: int) -> bool:
        held = sum(
            1
            for t, _ in self._tokens.values()
            if t.org == token.org and t.owner_sub == token.owner_sub and t.usable(token.created_at)
        )
        if held >= max_active:
            return False
        self._tokens[token.id] = (token, digest)
        return True

    async def find_token(self, digest: str) -> AccessToken | None:
        return next((t for t, d in self._tokens.values() if d == digest), None)

    async def get_token(self, token_id: str) -> AccessToken | None:
        found = self._tokens.get(token_id)
        return found[0] if found else None

    async def list_tokens(self, org: str, owner_sub: str | None) -> list[AccessToken]:
        out = [
            t
            for t, _ in self._tokens.values()
            if t.org == org
            and t.revoked_at is None
            and (owner_sub is None or t.owner_sub == owner_sub)
        ]
        return sorted(out, key=lambda t: (-t.created_at.timestamp(), t.id))

    async def revoke_token(self, token_id: str, at: datetime) -> bool:
        found = self._tokens.get(token_id)
        if found is None or found[0].revoked_at is not None:
            return False
        self._tokens[token_id] = (replace(found[0], revoked_at=at), found[1])
        return True

    async def touch_token(self, token_id: str, at: datetime, *, older_than: datetime) -> None:
        found = self._tokens.get(token_id)
        if found is None:
            return
        last = found[0].last_used_at
        if last is None or last < older_than:
            self._tokens[token_id] = (replace(found[0], last_used_at=at), found[1])

    async def purge_tokens(self, before: datetime) -> int:
        gone = [
            i
            for i, (t, _) in self._tokens.items()
            if (t.revoked_at is not None and t.revoked_at < before) or t.expires_at < before
        ]
        for token_id in gone:
            del self._tokens[token_id]
        return len(gone)


def token_out(token: AccessToken, now: datetime) -> dict[str, Any]:
    """A token as the API shows it: never the token, never its digest."""
    return {
        "id": token.id,
        "name": token.name,
        "owner": token.owner_email or token.owner_sub,
        "createdAt": format_time(token.created_at),
        "expiresAt": format_time(token.expires_at),
        "lastUsedAt": format_time(token.last_used_at) if token.last_used_at else None,
        "expired": token.expires_at <= now,
    }


class TokensService:
    def __init__(
        self,
        store: TokenStore,
        *,
        default_days: int = DEFAULT_TTL_DAYS,
        max_days: int = MAX_TTL_DAYS,
        clock: Callable[[], datetime] = utcnow,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        if not 1 <= max_days <= 3650 or not 1 <= default_days <= max_days:
            raise Invalid(
                "SANDBOX_PAT_DEFAULT_DAYS and SANDBOX_PAT_MAX_DAYS: "
                f"1 <= default ({default_days}) <= max ({max_days}) <= 3650",
                code="invalid-settings",
            )
        self.store = store
        self.default_days = default_days
        self.max_days = max_days
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[AccessToken | None, float]] = {}
        # token id -> (revoked or gone, until when): ``revoked``'s copy, as ``_cache``
        self._ended: dict[str, tuple[bool, float]] = {}
        self._touched: dict[str, datetime] = {}
        self._generation = 0  # bumped by every revoke: a lookup racing one is not kept
        # token id -> set when revoked here; kept only while a connection waits on it
        self._revoked: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )

    # --- the use cases ----------------------------------------------------------------

    async def create(self, principal: Principal, body: Any) -> dict[str, Any]:
        if principal.via_token:
            raise Forbidden(
                "a personal access token cannot create tokens: sign in (console or "
                "`sandbox login`) to create one",
                code="token-not-allowed",
            )
        if not isinstance(body, dict):
            raise Invalid(
                'request body must be a JSON object {"name": "...", "expiresInDays"?: n}',
                code="invalid-json",
            )
        unknown = sorted(str(k) for k in body if k not in ("name", "expiresInDays"))
        if unknown:
            raise Invalid(
                f"unknown field {unknown[0][:40]!r}: the body takes name and expiresInDays",
                code="invalid-field",
            )
        name = parse_token_name(body.get("name"))
        days = parse_ttl_days(
            body.get("expiresInDays"), default=self.default_days, cap=self.max_days
        )
        now = self._clock()
        token_id, secret = new_token()
        record = AccessToken(
            id=token_id,
            name=name,
            owner_sub=principal.sub,
            owner_email=principal.email,
            org=principal.org,
            identity=identity_of(principal),
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
        await self.store.purge_tokens(now - PURGE_AFTER)
        if not await self.store.add_token(
            record, hash_token(secret), max_active=MAX_TOKENS_PER_USER
        ):
            raise QuotaExceeded(
                f"you hold {MAX_TOKENS_PER_USER} usable access tokens, the most a user may: "
                "revoke one first",
                code="quota-exceeded",
            )
        log.info("token.created", pat=token_id, sub=principal.sub, org=principal.org, days=days)
        return {**token_out(record, now), "token": secret}

    async def list(self, principal: Principal, *, scope: str | None = None) -> dict[str, Any]:
        if scope not in (None, "own", "org"):
            raise Invalid('scope is "own" (default) or "org"', code="invalid-scope")
        if scope == "org" and not principal.is_org_admin:
            raise Forbidden("org admins list the org's tokens", code="org-admin-required")
        owner = None if scope == "org" else principal.sub
        now = self._clock()
        tokens = await self.store.list_tokens(principal.org, owner)
        return {"tokens": [token_out(t, now) for t in tokens]}

    async def revoke(self, principal: Principal, token_id: str) -> None:
        found = await self.store.get_token(token_id) if is_token_id(token_id) else None
        mine = found is not None and found.org == principal.org and found.owner_sub == principal.sub
        admin = found is not None and found.org == principal.org and principal.is_org_admin
        if found is None or not (mine or admin):
            raise NotFound(f'token "{_clip(token_id)}" not found', code="token-not-found")
        if await self.store.revoke_token(found.id, self._clock()):
            log.info("token.revoked", pat=found.id, by=principal.sub, org=principal.org)
        self._forget()
        event = self._revoked.get(found.id)
        if event is not None:
            event.set()

    async def wait_revoked(
        self, token_id: str, *, check_every: float = REVOKED_CHECK_SECONDS
    ) -> None:
        """Return once token ``token_id`` is revoked: at once when through this process,
        else at the next look at the store (every ``check_every`` seconds). A store that
        cannot be read is looked at again later, never read as revoked."""
        event = self._revoked.get(token_id)
        if event is None:
            event = self._revoked[token_id] = asyncio.Event()
        while True:
            try:
                async with asyncio.timeout(check_every):
                    await event.wait()
                return
            except TimeoutError:
                pass
            try:
                token = await self.store.get_token(token_id)
            except SandboxError:
                continue
            if token is None or token.revoked_at is not None:
                return

    async def revoked(self, token_id: str) -> bool:
        """Whether token ``token_id`` is revoked (or purged), as a request with it would
        find: from this process's copy of the last ``CACHE_SECONDS``, dropped by every
        revoke here (a revoke through another process applies within that time). What a
        preview grant minted from the token checks on each request."""
        cached = self._ended.get(token_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        generation = self._generation
        token = await self.store.get_token(token_id)
        ended = token is None or token.revoked_at is not None
        if generation == self._generation:
            if len(self._ended) >= CACHE_ENTRIES:
                self._ended.clear()
            self._ended[token_id] = (ended, time.monotonic() + self._cache_seconds)
        return ended

    # --- authentication ---------------------------------------------------------------

    async def authenticate(self, credential: str) -> Principal:
        """The principal a personal access token speaks for; ``Unauthenticated`` (detail
        for the log only) when it is malformed, unknown, revoked or expired."""
        if not well_formed(credential):
            raise Unauthenticated("personal access token is malformed")
        digest = hash_token(credential)
        token = await self._lookup(digest)
        now = self._clock()
        if token is None:
            raise Unauthenticated("personal access token is unknown")
        if token.revoked_at is not None:
            raise Unauthenticated(f"personal access token {token.id} is revoked")
        if now >= token.expires_at:
            raise Unauthenticated(f"personal access token {token.id} has expired")
        await self._touch(token, now)
        return token.principal()

    async def _lookup(self, digest: str) -> AccessToken | None:
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        generation = self._generation
        token = await self.store.find_token(digest)
        if generation == self._generation:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[digest] = (token, time.monotonic() + self._cache_seconds)
        return token

    async def _touch(self, token: AccessToken, now: datetime) -> None:
        last = self._touched.get(token.id) or token.last_used_at
        if last is not None and now - last < TOUCH_EVERY:
            return
        self._touched[token.id] = now
        if len(self._touched) > CACHE_ENTRIES:
            self._touched.clear()
        try:
            await self.store.touch_token(token.id, now, older_than=now - TOUCH_EVERY)
        except Exception as exc:  # a last-used time is not worth refusing a request for
            log.warning("token.touch_failed", pat=token.id, error=str(exc))

    def _forget(self) -> None:
        self._generation += 1
        self._cache.clear()
        self._ended.clear()


class JwtAuthenticator(Protocol):
    async def authenticate(self, token: str) -> Principal: ...


class PatAuthenticator:
    """The app's authenticator: personal access tokens by their prefix, every other
    credential to the JWT authenticator (which stays reachable as ``inner``)."""

    def __init__(self, inner: Any, tokens: TokensService) -> None:
        self.inner = inner
        self.tokens = tokens

    @property
    def validator(self) -> Any:
        return self.inner.validator

    async def authenticate(self, token: str) -> Principal:
        if looks_like_token(token):
            try:
                return await self.tokens.authenticate(token)
            except Unauthenticated as exc:
                log.info("auth.rejected", reason=exc.detail)
                raise
        principal: Principal = await self.inner.authenticate(token)
        return principal


def _clip(text: str) -> str:
    return text[:40].encode("utf-8", "replace").decode("utf-8")
