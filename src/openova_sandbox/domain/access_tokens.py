"""Personal access tokens (issue 11): long-lived credentials for scripts.

A token is ``osb_pat_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random
bits). The prefix makes it recognisable to the authenticator (a JWT never starts so) and
to secret scanners and people. It is shown once, at creation; what is stored is its
SHA-256. A fast unsalted hash is right here, unlike for passwords: salts and slow hashes
(bcrypt, scrypt, Argon2) defend guessable secrets against dictionary and brute-force
search, and 256 random bits cannot be searched, so a stolen table of digests gives
nothing - while a plain digest is what lets every request find its token by an indexed
lookup in one query.

A token speaks for its owner as the owner was when it was made (subject, email, org,
realm roles, tier, groups, username), expires (a default and a cap from the settings),
can be revoked by its owner or an org admin of its org, and records when it was last
used (at most once a minute per process).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import Invalid
from .principal import Principal

PAT_PREFIX = "osb_pat_"
MAX_TOKEN_NAME = 100
# tokens a user may hold at once (unexpired, unrevoked): scripts need a few, not thousands
MAX_TOKENS_PER_USER = 50
DEFAULT_TTL_DAYS = 30
MAX_TTL_DAYS = 365
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN_RE = re.compile(r"osb_pat_[A-Za-z0-9_-]{43}")
_ID_RE = re.compile(r"[0-9a-f]{16}")


def new_token() -> tuple[str, str]:
    """A new token's ``(id, secret)``: the id is public (listing, revoking), the secret
    is the bearer credential."""
    return secrets.token_hex(8), PAT_PREFIX + secrets.token_urlsafe(32)


def looks_like_token(value: str) -> bool:
    return value.startswith(PAT_PREFIX)


def well_formed(value: str) -> bool:
    return _TOKEN_RE.fullmatch(value) is not None


def is_token_id(value: str) -> bool:
    return _ID_RE.fullmatch(value) is not None


def hash_token(token: str) -> str:
    """The stored form: SHA-256, hex (see the module docstring for why that suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccessToken:
    """A token's stored record (never the token itself)."""

    id: str
    name: str
    owner_sub: str
    owner_email: str
    org: str
    identity: Mapping[str, Any]  # roles, tier, groups, username at creation
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at

    def principal(self) -> Principal:
        identity = self.identity

        def strings(key: str) -> tuple[str, ...]:
            value = identity.get(key)
            return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

        def text(key: str) -> str:
            value = identity.get(key)
            return value if isinstance(value, str) else ""

        return Principal(
            sub=self.owner_sub,
            email=self.owner_email,
            org=self.org,
            roles=frozenset(strings("roles")),
            tier=text("tier"),
            groups=strings("groups"),
            username=text("username"),
            expires_at=self.expires_at.timestamp(),
            via_token=self.id,
        )


def identity_of(principal: Principal) -> dict[str, Any]:
    return {
        "roles": sorted(principal.roles),
        "tier": principal.tier,
        "groups": list(principal.groups),
        "username": principal.username,
    }


def parse_token_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(
            'name is required: a label for the token, like "ci" (at most 100 characters)',
            code="invalid-name",
        )
    text = value.strip()
    if len(text) > MAX_TOKEN_NAME or _CONTROL.search(text) or not _encodes(text):
        raise Invalid(
            "name must be at most 100 printable characters of valid text", code="invalid-name"
        )
    return text


def parse_ttl_days(value: Any, *, default: int, cap: int) -> int:
    """``expiresInDays``: absent or null → ``default``; else a whole number 1..``cap``."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(
            f"expiresInDays must be a whole number of days from 1 to {cap}",
            code="invalid-expiry",
        )
    if not 1 <= value <= cap:
        raise Invalid(
            f"expiresInDays must be from 1 to {cap} (the server's cap), not {value}",
            code="invalid-expiry",
        )
    return value


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
