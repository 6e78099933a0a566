"""Where a request's token comes from — pure, so the precedence is testable without HTTP.

First match wins (sessions API, "Authentication"):

1. ``Authorization: Bearer <jwt>`` (the scheme is case-insensitive);
2. the query parameter ``access_token`` (EventSource and WebSocket cannot set headers);
3. the ``catalyst_session`` cookie, either a bare JWT, ``<jwt>.<sig>`` (see ``cookie``), or
   ``oidc:<sid>:<sig>``, a console session kept server-side (source ``session``: the
   "token" is the session id, resolved by ``oidc_sessions``).

An empty value counts as absent, and an ``Authorization`` header with another scheme
(``Basic …``) is not a match, so the next source is looked at. A *signed* cookie whose
signature does not verify is not silently skipped: :class:`CookieRejected` (an
``Unauthenticated``) tells the API to answer 401 and clear the cookie.
The token is never logged here or by callers: ``access_token`` in particular lands in
URLs, so request logs must drop the query string of authenticated routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..domain.errors import Unauthenticated
from .cookie import COOKIE_NAME, is_session, is_signed, session_id_of, verify_cookie

TokenSource = Literal["bearer", "query", "cookie", "session"]


class CookieRejected(Unauthenticated):
    """The session cookie carries a signature that does not verify: answer 401, clear it."""


@dataclass(frozen=True)
class TokenFound:
    token: str
    source: TokenSource

    def __repr__(self) -> str:  # never print a token by accident
        return f"TokenFound(token=<{len(self.token)} chars>, source={self.source!r})"


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer`` header, else ``None``."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    credentials = credentials.strip()
    return credentials or None


def extract_token(
    *,
    authorization: str | None,
    query_token: str | None,
    cookie: str | None,
    cookie_secret: str,
) -> TokenFound | None:
    """The request's token and where it was found, or ``None`` when there is none.

    Raises :class:`CookieRejected` when the cookie is the source and carries a signature
    that does not verify (or cannot be verified because no secret is configured).
    """
    token = bearer_token(authorization)
    if token:
        return TokenFound(token=token, source="bearer")
    if query_token and query_token.strip():
        return TokenFound(token=query_token.strip(), source="query")
    value = (cookie or "").strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()  # RFC 6265 allows a quoted cookie value
    if not value:
        return None
    if is_session(value):
        # a console session kept server-side (auth/oidc_sessions.py): the token is its id
        sid = session_id_of(value, cookie_secret)
        if sid is None:
            raise CookieRejected(f"{COOKIE_NAME} session cookie signature does not verify")
        return TokenFound(token=sid, source="session")
    if is_signed(value):
        jwt = verify_cookie(value, cookie_secret)
        if jwt is None:
            reason = "does not verify" if cookie_secret else "cannot be checked: no cookie secret"
            raise CookieRejected(f"{COOKIE_NAME} cookie signature {reason}")
        return TokenFound(token=jwt, source="cookie")
    return TokenFound(token=value, source="cookie")
