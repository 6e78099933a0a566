"""Login links: exchange a token for the console's session cookie.

A login link carries a short-lived token marked ``purpose: login`` with a ``jti``. The
one `sandbox serve` prints lives an hour; the ones a signed-in user makes for another
device (``POST /api/v1/sandbox/login-links``, `sandbox login-link`) live ten minutes and
may name the console page to land on (``next``). Each can be redeemed once: its ``jti``
is written to a file in the data dir before the session is handed out, so a link seen
over someone's shoulder, left in a scrollback or photographed as a QR code cannot be
replayed — not even after a restart. It is exchanged for a fresh session token. Tokens
without that mark (from `sandbox token` or an external issuer) are used as the session
token as they are.

Used links are remembered in ``<data-dir>/login-links-used`` (mode 0600): one line
``<jti> <exp>`` appended per redemption, entries past their expiry dropped when the file
is read and when it is compacted. The embedded issuer that mints links lives in the same
data dir, so the file is as shared as the links are; with an external issuer there are no
login links at all (409 ``login-links-unavailable``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import structlog

from ..domain.errors import Conflict, Forbidden, Invalid, Unauthenticated
from ..domain.principal import CONSOLE_PURPOSE, LOGIN_PURPOSE, Principal, principal_from_claims

log = structlog.get_logger(__name__)

SESSION_TTL = timedelta(hours=4)
SERVE_LINK_TTL = timedelta(hours=1)  # the link `sandbox serve` prints
DEVICE_LINK_TTL = timedelta(minutes=10)  # a link for another device
USED_FILE = "login-links-used"
DEFAULT_NEXT = "/sandbox"
CONSOLE = "/sandbox"
NEXT_MAX = 1024
_JTI = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_COMPACT_SLACK = 64


class Minter(Protocol):
    def mint(
        self,
        *,
        sub: str,
        email: str,
        org: str,
        roles: Any = (),
        ttl: timedelta = ...,
        extra: Any = None,
    ) -> str: ...


def check_next(value: object) -> str:
    """A console path to land on after signing in: same-site, relative, under
    ``/sandbox``. Anything else (another host, a scheme, ``//host``, backslashes,
    control characters) is refused with 400 ``invalid-next``."""
    if not isinstance(value, str):
        raise Invalid(
            "next must be a string: a console path like /sandbox/<id>", code="invalid-next"
        )
    parts = urlsplit(value)
    bad = (
        not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or len(value) > NEXT_MAX
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value)
        or parts.scheme
        or parts.netloc
        or not (parts.path == CONSOLE or parts.path.startswith(CONSOLE + "/"))
        or ".." in parts.path.split("/")
    )
    if bad:
        raise Invalid(
            f"next {value[:80]!r} is not a console path of this server (/sandbox or /sandbox/...)",
            code="invalid-next",
        )
    return value


def session_page(sandbox_id: str) -> str:
    """The console page of one sandbox (the console's ``sessionPath``)."""
    return f"{CONSOLE}/{quote(sandbox_id, safe='')}"


class UsedLinks:
    """The jtis of redeemed login links, kept until their links expire, in a file that
    survives restarts (``None``: memory only, for tests that want that)."""

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._used: dict[str, float] = {}
        self._lines = 0
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        now = self._clock()
        lines = text.splitlines()
        for line in lines:
            jti, _, exp = line.strip().partition(" ")
            try:
                expires = float(exp)
            except ValueError:
                continue
            if _JTI.match(jti) and expires > now:
                self._used[jti] = max(expires, self._used.get(jti, 0.0))
        self._lines = len(lines)
        if self._lines > len(self._used):
            self._compact()
        elif path.stat().st_mode & 0o077:
            path.chmod(0o600)

    def _compact(self) -> None:
        """Rewrite the file with the entries still needed (atomically, 0600)."""
        if self._path is None:
            return
        tmp = self._path.with_name(f".{self._path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.writelines(f"{jti} {exp:.0f}\n" for jti, exp in self._used.items())
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._lines = len(self._used)

    def _prune(self) -> None:
        now = self._clock()
        expired = [jti for jti, exp in self._used.items() if exp <= now]
        for jti in expired:
            del self._used[jti]

    def claim(self, jti: str, expires: float) -> bool:
        """Mark ``jti`` used; ``False`` when it already was. Written (and fsynced) before
        this returns ``True``, so a crash right after cannot make the link usable again."""
        self._prune()
        if jti in self._used:
            return False
        if not _JTI.match(jti):
            return False
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, f"{jti} {expires:.0f}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self._lines += 1
        self._used[jti] = expires
        if self._lines > 2 * len(self._used) + _COMPACT_SLACK:
            self._compact()
        return True

    def __contains__(self, jti: object) -> bool:
        return jti in self._used


@dataclass(frozen=True)
class LoginLink:
    url: str
    expires_at: datetime
    token: str


@dataclass(frozen=True)
class Redeemed:
    session_token: str
    next: str  # where to go once signed in
    principal: Principal | None = None  # who signed in (the audit log's actor)


class LoginService:
    def __init__(
        self,
        *,
        validate: Callable[[str], Awaitable[dict[str, Any]]],
        minter: Minter | None,
        clock: Callable[[], float] = time.time,
        used: UsedLinks | None = None,
    ) -> None:
        self._validate = validate
        self._minter = minter
        self._clock = clock
        self._used = used if used is not None else UsedLinks(None, clock=clock)

    @property
    def available(self) -> bool:
        """Whether this server mints login links (it has the embedded issuer)."""
        return self._minter is not None

    def login_link_token(
        self,
        *,
        sub: str,
        email: str,
        org: str,
        roles: list[str],
        ttl: timedelta = SERVE_LINK_TTL,
        next_path: str | None = None,
    ) -> str:
        if self._minter is None:
            raise Conflict(
                "this server validates tokens of an external issuer; sign in there "
                "(login links need the embedded issuer)",
                code="login-links-unavailable",
            )
        extra: dict[str, Any] = {"purpose": LOGIN_PURPOSE}
        if next_path:
            extra["next"] = check_next(next_path)
        return self._minter.mint(sub=sub, email=email, org=org, roles=roles, ttl=ttl, extra=extra)

    def link_for(
        self, principal: Principal, *, base_url: str, next_path: str | None = None
    ) -> LoginLink:
        """A one-time link (10 min) for another device, signing in as ``principal``."""
        if principal.via_token:
            # a personal access token mints no credentials: a browser session made from
            # one would outlive its revocation (issue 11, docs/api.md)
            raise Forbidden(
                "a personal access token cannot make sign-in links: sign in to make one",
                code="token-not-allowed",
            )
        target = check_next(next_path) if next_path is not None else None
        expires = datetime.fromtimestamp(int(self._clock()), UTC) + DEVICE_LINK_TTL
        token = self.login_link_token(
            sub=principal.sub,
            email=principal.email,
            org=principal.org,
            roles=sorted(principal.roles),
            ttl=DEVICE_LINK_TTL,
            next_path=target,
        )
        url = f"{base_url.rstrip('/')}/login?token={token}"
        log.info("login.link_created", sub=principal.sub, next=target or DEFAULT_NEXT)
        return LoginLink(url=url, expires_at=expires, token=token)

    async def inspect(self, token: str) -> tuple[bool, Principal]:
        """Whether ``token`` is a login link's, and whom it speaks for (validated)."""
        claims = await self._validate(token)
        principal = principal_from_claims(claims)
        if principal is None:
            raise Unauthenticated("token has no sub")
        return claims.get("purpose") == LOGIN_PURPOSE, principal

    async def redeem(self, token: str, *, next_path: str | None = None) -> Redeemed:
        """The session token for ``token`` and where to go: a login link's own ``next``,
        else ``next_path`` (already checked), else the console."""
        claims = await self._validate(token)
        principal = principal_from_claims(claims)
        if principal is None:
            raise Unauthenticated("token has no sub")
        fallback = next_path or DEFAULT_NEXT
        if claims.get("purpose") != LOGIN_PURPOSE:
            return Redeemed(token, fallback, principal)
        target = claims.get("next")
        try:
            destination = check_next(target) if target else fallback
        except Invalid:
            destination = DEFAULT_NEXT  # minted by us, so never; but never off-site either
        if self._minter is None:
            raise Unauthenticated("no embedded issuer to mint a session")
        jti = str(claims.get("jti", ""))
        expires = float(claims.get("exp", self._clock() + SERVE_LINK_TTL.total_seconds()))
        if not jti or not self._used.claim(jti, expires):
            raise Unauthenticated("login link already used")
        session = self._minter.mint(
            sub=principal.sub,
            email=principal.email,
            org=principal.org,
            roles=sorted(principal.roles),
            ttl=SESSION_TTL,
            extra={"purpose": CONSOLE_PURPOSE},
        )
        log.info("login.link_redeemed", sub=principal.sub)
        return Redeemed(session, destination, principal)
