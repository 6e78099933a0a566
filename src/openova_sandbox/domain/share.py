"""Share links of a sandbox: the record, its token rules and how it is stored.

A share lets a signed-in member of the sandbox's org watch (``read``) or use
(``write``) its terminals through a link, until it expires or is revoked. The link
carries a random token; only its SHA-256 is stored, in the Sandbox's annotation
``sandbox.openova.io/shares`` (a JSON list), so shares work with every store and die
with the sandbox. Pure: no I/O, the clock is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .errors import Invalid
from .model import format_time, parse_time

ANNOTATION_SHARES = "sandbox.openova.io/shares"

READ, WRITE = "read", "write"
MODES = (READ, WRITE)
DEFAULT_MODE = READ
DEFAULT_TTL_SECONDS = 3600
MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 7 * 24 * 3600  # 604800
MAX_LIVE_SHARES = 20

TOKEN_BYTES = 24  # secrets.token_urlsafe(24): 32 characters, 192 bits
HASH_PREFIX = "sha256:"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_share_id() -> str:
    return secrets.token_hex(6)


def hash_token(token: str) -> str:
    """What is stored for ``token``: ``sha256:<hex>``."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def allows_input(mode: str) -> bool:
    """Whether a viewer in ``mode`` may type into and resize the terminal."""
    return mode == WRITE


@dataclass(frozen=True)
class ShareRequest:
    mode: str = DEFAULT_MODE
    ttl_seconds: int = DEFAULT_TTL_SECONDS


def parse_request(body: Mapping[str, Any]) -> ShareRequest:
    """The create body ``{"mode"?, "ttlSeconds"?}``; unknown fields are ignored.
    Raises ``Invalid`` (``invalid-mode`` / ``invalid-ttl``) with a detail that says
    what is accepted."""
    mode = body.get("mode", DEFAULT_MODE)
    if mode is None:
        mode = DEFAULT_MODE
    if not isinstance(mode, str) or mode not in MODES:
        raise Invalid(
            f'mode must be "read" or "write", not {json.dumps(mode)[:40]}', code="invalid-mode"
        )
    ttl = body.get("ttlSeconds", DEFAULT_TTL_SECONDS)
    if ttl is None:
        ttl = DEFAULT_TTL_SECONDS
    if isinstance(ttl, float) and ttl.is_integer():
        ttl = int(ttl)
    if not isinstance(ttl, int) or isinstance(ttl, bool):
        raise Invalid(
            f"ttlSeconds must be an integer number of seconds from {MIN_TTL_SECONDS} to "
            f"{MAX_TTL_SECONDS}, not {json.dumps(ttl)[:40]}",
            code="invalid-ttl",
        )
    if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        raise Invalid(
            f"ttlSeconds must be from {MIN_TTL_SECONDS} (1 minute) to {MAX_TTL_SECONDS} "
            f"(7 days), not {ttl}",
            code="invalid-ttl",
        )
    return ShareRequest(mode=mode, ttl_seconds=ttl)


@dataclass(frozen=True)
class Share:
    id: str
    mode: str
    token_hash: str
    created_at: datetime
    expires_at: datetime
    created_by: str

    @classmethod
    def issue(cls, request: ShareRequest, *, created_by: str, now: datetime) -> tuple[Share, str]:
        """A new share and its token (the only time the token exists in clear)."""
        token = new_token()
        created = now.replace(microsecond=0)
        share = cls(
            id=new_share_id(),
            mode=request.mode,
            token_hash=hash_token(token),
            created_at=created,
            expires_at=created + timedelta(seconds=request.ttl_seconds),
            created_by=created_by,
        )
        return share, token

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def matches(self, token: str) -> bool:
        """Constant-time comparison of ``token``'s hash with the stored one."""
        return hmac.compare_digest(hash_token(token), self.token_hash)

    def to_stored(self) -> dict[str, str]:
        return {
            "id": self.id,
            "mode": self.mode,
            "tokenHash": self.token_hash,
            "createdAt": format_time(self.created_at),
            "expiresAt": format_time(self.expires_at),
            "createdBy": self.created_by,
        }

    def to_item(self) -> dict[str, str]:
        """The wire shape of a listed share: never the token nor its hash."""
        return {
            "id": self.id,
            "mode": self.mode,
            "expiresAt": format_time(self.expires_at),
            "createdAt": format_time(self.created_at),
            "createdBy": self.created_by,
        }

    @classmethod
    def from_stored(cls, raw: Any) -> Share | None:
        """``None`` for an entry this version cannot use (edited by hand, corrupted)."""
        if not isinstance(raw, dict):
            return None
        share_id, mode, token_hash = raw.get("id"), raw.get("mode"), raw.get("tokenHash")
        created, expires = parse_time(raw.get("createdAt")), parse_time(raw.get("expiresAt"))
        by = raw.get("createdBy", "")
        if not (isinstance(share_id, str) and share_id and mode in MODES):
            return None
        if not (isinstance(token_hash, str) and token_hash.startswith(HASH_PREFIX)):
            return None
        if created is None or expires is None:
            return None
        return cls(
            id=share_id,
            mode=str(mode),
            token_hash=token_hash,
            created_at=created,
            expires_at=expires,
            created_by=by if isinstance(by, str) else "",
        )


def read_shares(annotations: Mapping[str, str]) -> list[Share]:
    """The shares stored on a sandbox (expired ones included), oldest first. A missing
    or unreadable annotation holds none; unusable entries are skipped, so one bad
    entry never locks the owner out of the others."""
    text = annotations.get(ANNOTATION_SHARES)
    if not text:
        return []
    try:
        raw = json.loads(text)
    except ValueError:
        return []
    if not isinstance(raw, list):
        return []
    shares = [s for s in (Share.from_stored(entry) for entry in raw) if s is not None]
    return sorted(shares, key=lambda s: (s.created_at, s.id))


def live(shares: Iterable[Share], now: datetime) -> list[Share]:
    return [s for s in shares if not s.expired(now)]


def write_shares(annotations: Mapping[str, str], shares: Iterable[Share]) -> dict[str, str]:
    """``annotations`` with ``shares`` stored (the key removed when there are none)."""
    out = {k: v for k, v in annotations.items() if k != ANNOTATION_SHARES}
    entries = [s.to_stored() for s in shares]
    if entries:
        out[ANNOTATION_SHARES] = json.dumps(entries, separators=(",", ":"), sort_keys=True)
    return out


def find_by_token(shares: Iterable[Share], token: str) -> Share | None:
    """The share ``token`` opens; every entry is compared, so the time taken does not
    say which one matched."""
    found: Share | None = None
    for share in shares:
        if share.matches(token) and found is None:
            found = share
    return found
