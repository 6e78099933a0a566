"""Console sessions signed in with an external OIDC issuer, kept server-side.

The browser holds only ``catalyst_session=oidc:<sid>:<sig>`` — a random session id and
its HMAC under the cookie secret. Everything else stays here, in a ``SessionBackend``:

* one record per session, keyed by the SHA-256 of the session id (the backend gives no
  cookie away): the issuer's access, refresh and ID tokens and the claims the caller
  was signed in with, **encrypted before it is stored** with Fernet (AES-128-CBC +
  HMAC-SHA256) under a key derived from the cookie secret (HMAC-SHA256 of a fixed
  label): the database never holds a token in clear;
* the backend is the store's database (``store/sql_oidc_sessions.py``: SQLite in the
  data dir, or ``SANDBOX_DATABASE_URL``, which every API replica of Kubernetes mode
  shares), as for the gateway's ledger and the access tokens; memory with
  ``SANDBOX_STORE=memory`` (``MemorySessionBackend``).

A session lasts ``SESSION_TTL_S`` (4 h, the cookie's ``Max-Age`` in the spec). Within it
the access token is refreshed with the refresh token shortly before it expires; a
refresh the issuer refuses ends the session (401). Ended sessions are deleted, expired
ones removed at start and at each sign-in.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ..domain.errors import BackendUnavailable, Unauthenticated
from ..domain.principal import Principal
from .claims import ClaimMapping
from .cookie import SESSION_KEY_LABEL, derived_key
from .oidc_client import OidcClient, TokenError, TokenSet, new_secret

if TYPE_CHECKING:
    from ..config import Settings

log = structlog.get_logger(__name__)

SESSION_TTL_S = 4 * 3600.0
REFRESH_MARGIN_S = 60.0
CACHE_SECONDS = 2.0
# how often a live connection of a session looks whether another process ended it
ENDED_CHECK_SECONDS = 5.0
# the close reason (WebSocket 1008) of a connection whose console session was ended
REASON_SIGNED_OUT = "signed-out"
CACHE_ENTRIES = 10_000


class SessionBackend(Protocol):
    """Where encrypted session records are kept, by key (the SHA-256 of the id)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def get(self, key: str) -> bytes | None: ...
    async def put(self, key: str, blob: bytes, expires_at: float) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def prune(self, now: float) -> int: ...


class MemorySessionBackend:
    """This process only (``SANDBOX_STORE=memory`` and tests)."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[bytes, float]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, key: str) -> bytes | None:
        found = self.records.get(key)
        return None if found is None else found[0]

    async def put(self, key: str, blob: bytes, expires_at: float) -> None:
        self.records[key] = (blob, expires_at)

    async def delete(self, key: str) -> None:
        self.records.pop(key, None)

    async def prune(self, now: float) -> int:
        gone = [key for key, (_, expires) in self.records.items() if expires <= now]
        for key in gone:
            del self.records[key]
        return len(gone)


@dataclass
class SessionRecord:
    """One signed-in console session. Tokens stay out of ``repr``."""

    sub: str
    org: str  # the org the caller asked for at sign-in ("" when none)
    claims: dict[str, Any] = field(repr=False)
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    id_token: str = field(repr=False)
    access_expires_at: float | None
    obtained_at: float
    created_at: float
    expires_at: float

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SessionRecord:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a session record")
        return cls(**data)

    def bearer(self) -> str:
        return TokenSet(
            access_token=self.access_token, expires_at=None, id_token=self.id_token
        ).bearer()


@dataclass(frozen=True)
class Resolved:
    token: str = field(repr=False)  # what a sandbox's terminal server is given
    principal: Principal


Validate = Callable[[str], Awaitable[dict[str, Any]]]


class OidcSessions:
    def __init__(
        self,
        backend: SessionBackend,
        *,
        cookie_secret: str,
        client: OidcClient,
        mapping: ClaimMapping,
        validate_bearer: Validate,
        clock: Callable[[], float] = time.time,
        ttl_s: float = SESSION_TTL_S,
        audience: str = "",
    ) -> None:
        """``audience``: the one bearers must name (``SANDBOX_OIDC_AUDIENCE``), which a
        sandbox pod checks on the token relayed for a session (:meth:`relayed`)."""
        from cryptography.fernet import Fernet

        if not cookie_secret:
            raise ValueError("OIDC sessions need a cookie secret")
        self.backend = backend
        self._secret = cookie_secret
        self._fernet = Fernet(
            base64.urlsafe_b64encode(derived_key(cookie_secret, SESSION_KEY_LABEL))
        )
        self.client = client
        self.mapping = mapping
        self._validate_bearer = validate_bearer
        self._audience = audience
        self._clock = clock
        self._ttl = ttl_s
        self._locks: dict[str, asyncio.Lock] = {}
        # key (``handle``) → (monotonic time read, record): a session is read from the
        # database at most every CACHE_SECONDS per process (as access tokens are:
        # services/tokens.py)
        self._cache: dict[str, tuple[float, SessionRecord]] = {}
        # key → set when this process ends the session (live connections wait on it)
        self._ended: dict[str, asyncio.Event] = {}
        self._waiters: dict[str, int] = {}

    # --- records ------------------------------------------------------------------
    @staticmethod
    def _key(sid: str) -> str:
        return hashlib.sha256(sid.encode("ascii")).hexdigest()

    @staticmethod
    def handle(sid: str) -> str:
        """What names a session without giving its cookie away: the SHA-256 of its id,
        its record's key. A preview grant carries it (domain/preview_grant.py) to end
        with the session (:meth:`live`, :meth:`wait_ended_key`)."""
        return OidcSessions._key(sid)

    async def _write(self, sid: str, record: SessionRecord) -> None:
        blob = self._fernet.encrypt(record.to_json())
        await self.backend.put(self._key(sid), blob, record.expires_at)
        self._remember(self._key(sid), record)

    def _remember(self, key: str, record: SessionRecord) -> None:
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), record)

    async def load(self, sid: str, *, fresh: bool = False) -> SessionRecord | None:
        """The session's record, decrypted; ``None`` when unknown or unreadable.
        ``fresh``: from the database, not this process's copy of the last 2 s."""
        return await self._load(self._key(sid), fresh=fresh)

    async def _load(self, key: str, *, fresh: bool) -> SessionRecord | None:
        from cryptography.fernet import InvalidToken

        cached = None if fresh else self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        raw = await self.backend.get(key)
        if raw is None:
            self._cache.pop(key, None)
            return None
        try:
            record = SessionRecord.from_json(self._fernet.decrypt(raw))
        except (InvalidToken, ValueError, TypeError):
            # another cookie secret wrote it (rotated), or it was damaged: not ours to use
            log.warning("auth.oidc.session_unreadable")
            return None
        self._remember(key, record)
        return record

    async def live(self, key: str) -> bool:
        """Whether the session of handle ``key`` is still on (not signed out, expired or
        refused a refresh), from this process's copy of the last 2 s as every request
        with the cookie is: a sign-out through this process applies at once, through
        another one within ``CACHE_SECONDS``. ``BackendUnavailable`` when unreadable."""
        record = await self._load(key, fresh=False)
        return record is not None and record.expires_at > self._clock()

    async def _remove(self, sid: str) -> None:
        key = self._key(sid)
        self._cache.pop(key, None)
        await self.backend.delete(key)
        ended = self._ended.pop(key, None)
        if ended is not None:
            ended.set()

    async def wait_ended(self, sid: str, *, check_every: float = ENDED_CHECK_SECONDS) -> None:
        """Return once the session is over (signed out, expired, refused a refresh): at
        once when this process ended it, else at the next look at the backend (every
        ``check_every`` s). A backend that cannot be read is looked at again later, never
        read as ended. For live connections opened with the session cookie."""
        await self.wait_ended_key(self._key(sid), check_every=check_every)

    async def wait_ended_key(self, key: str, *, check_every: float = ENDED_CHECK_SECONDS) -> None:
        """:meth:`wait_ended` by the session's :meth:`handle` (a preview grant's)."""
        event = self._ended.setdefault(key, asyncio.Event())
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            while True:
                try:
                    async with asyncio.timeout(check_every):
                        await event.wait()
                    return
                except TimeoutError:
                    pass
                try:
                    record = await self._load(key, fresh=True)
                except BackendUnavailable:
                    continue
                if record is None or record.expires_at <= self._clock():
                    return
        finally:
            left = self._waiters.pop(key, 1) - 1
            if left:
                self._waiters[key] = left
            elif self._ended.get(key) is event:
                del self._ended[key]  # the last connection of the session is gone

    async def start(self) -> None:
        """Open the backend and remove expired sessions (a lifecycle part of the app)."""
        try:
            await self.backend.start()
            removed = await self.backend.prune(self._clock())
        except BackendUnavailable as exc:  # opened at the first sign-in instead
            log.warning("auth.oidc.sessions_unreachable_at_start", error=exc.detail)
            return
        if removed:
            log.info("auth.oidc.sessions_pruned", removed=removed)

    async def stop(self) -> None:
        await self.backend.close()

    # --- claims -------------------------------------------------------------------
    async def _claims(self, tokens: TokenSet, id_claims: Mapping[str, Any]) -> dict[str, Any]:
        """The ID token's claims, with the access token's over them when it is a JWT
        this server accepts as a bearer (Keycloak puts realm roles only there)."""
        claims = dict(id_claims)
        if tokens.access_token.count(".") == 2:
            try:
                access = await self._validate_bearer(tokens.access_token)
            except Unauthenticated as exc:
                log.info("auth.oidc.access_token_not_a_bearer", reason=exc.detail)
            else:
                if access.get("sub") == claims.get("sub"):
                    claims.update(access)
        for key in ("nonce", "at_hash", "c_hash", "auth_time", "azp", "sid"):
            claims.pop(key, None)
        return claims

    def _principal(self, record: SessionRecord) -> Principal:
        principal = self.mapping.principal(record.claims, requested_org=record.org or None)
        if principal is None:
            raise Unauthenticated("the ID token has no sub")
        # live connections end with the session, not with each access token (refreshed)
        return replace(principal, expires_at=record.expires_at)

    # --- the session's life ----------------------------------------------------------
    async def sign_in(
        self, tokens: TokenSet, id_claims: Mapping[str, Any], *, requested_org: str
    ) -> tuple[str, Principal]:
        """A new session for a completed sign-in: its id and the caller.
        ``UnusableClaim`` when the claims do not map (nothing is stored then)."""
        now = self._clock()
        claims = await self._claims(tokens, id_claims)
        record = SessionRecord(
            sub=str(claims.get("sub", "")),
            org=requested_org,
            claims=claims,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            id_token=tokens.id_token,
            access_expires_at=tokens.expires_at or _exp(claims),
            obtained_at=now,
            created_at=now,
            expires_at=now + self._ttl,
        )
        principal = self._principal(record)  # refuse before anything is stored
        sid = new_secret()
        await self._write(sid, record)
        with contextlib.suppress(BackendUnavailable):
            await self.backend.prune(now)
        log.info("auth.oidc.signed_in", sub=principal.sub, org=principal.org)
        return sid, principal

    async def resolve(self, sid: str) -> Resolved:
        """The caller of a session, its access token refreshed first when it is about
        to expire. ``Unauthenticated`` when the session is unknown, over or refused."""
        record = await self.load(sid)
        if record is None:
            raise Unauthenticated("no such console session (signed out, or expired)")
        now = self._clock()
        if record.expires_at <= now:
            await self._remove(sid)
            raise Unauthenticated("the console session has expired")
        if self._due(record, now):
            record = await self._refresh(sid)
        return Resolved(token=self.relayed(record), principal=self._principal(record))

    def relayed(self, record: SessionRecord) -> str:
        """The token a sandbox's terminal server is given for this session (Kubernetes
        mode): the access token when it is a JWT, else the ID token — except that with an
        audience configured, an access token that does not name it gives way to the ID
        token (whose audience, our client, the pod accepts too: docs/auth.md,
        "Kubernetes mode's sandbox pods"). The unverified ``aud`` only picks which one;
        the pod verifies what it gets."""
        token = record.bearer()
        if (
            self._audience
            and record.id_token
            and token == record.access_token
            and not _names_audience(token, self._audience)
        ):
            return record.id_token
        return token

    def _due(self, record: SessionRecord, now: float) -> bool:
        if record.access_expires_at is None:
            return False
        lifetime = max(0.0, record.access_expires_at - record.obtained_at)
        margin = min(REFRESH_MARGIN_S, lifetime / 4)
        return record.access_expires_at - now <= margin

    async def _refresh(self, sid: str) -> SessionRecord:
        lock = self._locks.setdefault(sid, asyncio.Lock())
        async with lock:
            # another request, or another replica, may have refreshed meanwhile
            record = await self.load(sid, fresh=True)
            if record is None:
                raise Unauthenticated("no such console session (signed out, or expired)")
            now = self._clock()
            if not self._due(record, now):
                return record
            expired = record.access_expires_at is not None and record.access_expires_at <= now
            if not record.refresh_token:
                if expired:
                    await self._remove(sid)
                    raise Unauthenticated("the issuer's token expired and it gave no refresh")
                return record
            try:
                tokens = await self.client.refresh(record.refresh_token)
                id_claims: Mapping[str, Any] = record.claims
                if tokens.id_token:
                    id_claims = await self.client.id_token_claims(tokens.id_token, nonce=None)
                    if id_claims.get("sub") != record.sub:
                        raise Unauthenticated("the refreshed ID token names another sub")
                claims = await self._claims(tokens, id_claims)
            except TokenError as exc:
                current = await self.load(sid, fresh=True)
                if current is not None and current.refresh_token != record.refresh_token:
                    # another process refreshed first (rotating the refresh token): theirs
                    return current
                await self._remove(sid)
                log.info("auth.oidc.refresh_refused", sub=record.sub, reason=exc.detail)
                raise Unauthenticated(f"the issuer refused the refresh: {exc.detail}") from exc
            except BackendUnavailable:
                if expired:
                    raise
                log.warning("auth.oidc.refresh_deferred", sub=record.sub)
                return record
            finally:
                self._locks.pop(sid, None)
            record.claims = claims
            record.access_token = tokens.access_token
            record.refresh_token = tokens.refresh_token or record.refresh_token
            record.id_token = tokens.id_token or record.id_token
            record.access_expires_at = tokens.expires_at or _exp(claims)
            record.obtained_at = now
            await self._write(sid, record)
            log.info("auth.oidc.refreshed", sub=record.sub)
            return record

    async def end(self, sid: str) -> SessionRecord | None:
        """Forget the session here and revoke its refresh token at the issuer when it
        offers revocation (best effort: a failure is logged); the record, for logout."""
        record = await self.load(sid, fresh=True)  # the newest refresh token, to revoke
        await self._remove(sid)
        if record is None:
            return None
        if record.refresh_token:
            try:
                await self.client.revoke(record.refresh_token)
            except (TokenError, BackendUnavailable) as exc:
                log.warning("auth.oidc.revoke_failed", reason=exc.detail)
        log.info("auth.oidc.signed_out", sub=record.sub)
        return record


def _exp(claims: Mapping[str, Any]) -> float | None:
    value = claims.get("exp")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def build_oidc_sessions(
    settings: Settings,
    *,
    cookie_secret: str,
    validate_bearer: Validate,
    backend: SessionBackend,
) -> OidcSessions | None:
    """The console's OIDC sessions when an issuer and a client id are configured, else
    ``None`` (the console's Sign in stays hidden; login links still work)."""
    if not (settings.oidc_issuer.strip() and settings.oidc_client_id.strip()):
        return None
    client = OidcClient(
        issuer=settings.oidc_issuer.strip(),
        client_id=settings.oidc_client_id.strip(),
        client_secret=settings.oidc_client_secret,
        scopes=settings.oidc_scopes,
    )
    sessions = OidcSessions(
        backend,
        cookie_secret=cookie_secret,
        client=client,
        mapping=ClaimMapping.from_settings(settings),
        validate_bearer=validate_bearer,
        audience=settings.oidc_audience,
    )
    log.info("auth.oidc.console_sign_in", issuer=client.issuer, client_id=client.client_id)
    return sessions


def _names_audience(token: str, audience: str) -> bool:
    """Whether a JWT's (unverified) ``aud`` names ``audience``."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return False
    aud = claims.get("aud") if isinstance(claims, dict) else None
    return aud == audience or (isinstance(aud, list) and audience in aud)
