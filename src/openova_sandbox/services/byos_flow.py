"""The I/O-free pieces of the Claude Code connect flow: PKCE, redirect checks, flow states.

Kept apart from the service so each rule can be tested on its own and the service reads
as the flow. The flow state is the only thing that ties the provider's callback to the
user who started it (the session cookie is ``SameSite=Strict`` and does not travel on the
provider's cross-site redirect), so it is unguessable (uuid4), single use, short lived
and bounded in number: a user who keeps pressing "Connect" cannot grow the table, and
cannot evict other users' flows either.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..domain.errors import Invalid

VERIFIER_BYTES = 32
STATE_TTL_SECONDS = 600.0
MAX_PENDING_FLOWS = 10_000
MAX_PENDING_PER_USER = 5
MAX_REDIRECT_LENGTH = 2048
DEFAULT_POST_CONNECT_REDIRECT = "/sandbox?byos=ok"

_REDIRECT_RULE = (
    'post_connect_redirect must be a same-site relative path starting with "/" '
    '(not "//", no scheme, no backslash, whitespace or control characters)'
)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_verifier() -> str:
    """A PKCE code verifier: 32 random bytes, base64url without padding (43 characters)."""
    return _b64url(secrets.token_bytes(VERIFIER_BYTES))


def challenge_for(verifier: str) -> str:
    """The S256 code challenge of RFC 7636: base64url(SHA-256(verifier)), no padding."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def check_redirect(value: object) -> str:
    """Return ``value`` when it is a path on this site; raise ``Invalid`` otherwise.

    Browsers read ``//host`` and ``/\\host`` as another host and drop tabs and newlines
    from URLs (so ``/\\t/host`` becomes ``//host``); all of those are refused, as is any
    scheme. ``None`` or an empty string means the default.
    """
    if value is None or value == "":
        return DEFAULT_POST_CONNECT_REDIRECT
    if not isinstance(value, str):
        raise Invalid(_REDIRECT_RULE, code="invalid-redirect")
    if len(value) > MAX_REDIRECT_LENGTH:
        raise Invalid(
            f"post_connect_redirect is longer than {MAX_REDIRECT_LENGTH} characters",
            code="invalid-redirect",
        )
    bad_char = any(c.isspace() or unicodedata.category(c).startswith("C") for c in value)
    if bad_char or not value.startswith("/") or value.startswith("//") or "\\" in value:
        raise Invalid(_REDIRECT_RULE, code="invalid-redirect")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        raise Invalid(_REDIRECT_RULE, code="invalid-redirect")
    return value


@dataclass(frozen=True)
class PendingFlow:
    """What the callback needs to finish a connection the user started."""

    sub: str
    verifier: str = field(repr=False)
    redirect_uri: str
    post_connect_redirect: str
    expires_at: float


class FlowStates:
    """state → PendingFlow, in memory, single use, expiring, bounded overall and per user."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        ttl: float = STATE_TTL_SECONDS,
        max_pending: int = MAX_PENDING_FLOWS,
        max_per_user: int = MAX_PENDING_PER_USER,
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max_pending = max_pending
        self._max_per_user = max_per_user
        self._flows: OrderedDict[str, PendingFlow] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flows)

    def issue(
        self, *, sub: str, verifier: str, redirect_uri: str, post_connect_redirect: str
    ) -> str:
        """Remember a new flow for ``sub`` and return its state (a uuid4 string)."""
        now = self._clock()
        self._expire(now)
        mine = [key for key, flow in self._flows.items() if flow.sub == sub]
        for key in mine[: max(0, len(mine) - self._max_per_user + 1)]:
            del self._flows[key]
        while len(self._flows) >= self._max_pending:
            self._flows.popitem(last=False)
        state = str(uuid.uuid4())
        self._flows[state] = PendingFlow(
            sub=sub,
            verifier=verifier,
            redirect_uri=redirect_uri,
            post_connect_redirect=post_connect_redirect,
            expires_at=now + self._ttl,
        )
        return state

    def take(self, state: str) -> PendingFlow | None:
        """The flow for ``state``, removed; ``None`` when unknown, used or expired."""
        flow = self._flows.pop(state, None)
        if flow is None or flow.expires_at <= self._clock():
            return None
        return flow

    def drop_user(self, sub: str) -> None:
        for key in [key for key, flow in self._flows.items() if flow.sub == sub]:
            del self._flows[key]

    def _expire(self, now: float) -> None:
        # insertion order is expiry order (one ttl), so the expired ones are at the front
        while self._flows:
            key, flow = next(iter(self._flows.items()))
            if flow.expires_at > now:
                return
            del self._flows[key]
