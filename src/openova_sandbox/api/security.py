"""Request authentication: find the token, validate it, yield the Principal.

Token sources and validation live in ``auth``; this module is the HTTP glue. The source
of the token is remembered on ``request.state`` so a bad cookie can be cleared.
"""

from __future__ import annotations

from typing import Protocol

import structlog
from fastapi import Request
from starlette.requests import HTTPConnection

from ..auth.sources import CookieRejected, extract_token
from ..domain.errors import Forbidden, Unauthenticated
from ..domain.principal import Principal
from .errors import COOKIE_NAME

log = structlog.get_logger(__name__)


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal: ...


async def principal_from(conn: HTTPConnection) -> Principal:
    """Authenticate an HTTP request or a WebSocket handshake; raise ``Unauthenticated``."""
    deps = conn.app.state.deps
    try:
        found = extract_token(
            authorization=conn.headers.get("authorization"),
            query_token=conn.query_params.get("access_token"),
            cookie=conn.cookies.get(COOKIE_NAME),
            cookie_secret=deps.cookie_secret,
        )
    except CookieRejected:
        conn.state.token_source = "cookie"
        raise
    if found is None:
        raise Unauthenticated("no token")
    conn.state.token_source = found.source
    conn.state.token = found.token  # forwarded to a sandbox's terminal server; never logged
    principal: Principal = await deps.authenticator.authenticate(found.token)
    conn.state.principal = principal
    return principal


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def require_principal(request: Request) -> Principal:
    """The caller; a change made with the session cookie must also come from this
    server's own pages. ``SameSite=Strict`` keeps other *sites* out, but another origin of
    the same site (a sibling subdomain, another port) still sends the cookie, and a
    ``text/plain`` POST needs no preflight: its ``Origin`` is what gives it away."""
    principal = await principal_from(request)
    if (
        request.method not in SAFE_METHODS
        and request.state.token_source == "cookie"
        and not origin_allowed(request, request.app.state.deps.settings.public_url)
    ):
        log.info("auth.cross_origin_refused", method=request.method)
        raise Forbidden(
            "a change with the session cookie must come from this server's pages",
            code="cross-origin-request",
        )
    return principal


def origin_allowed(conn: HTTPConnection, public_url: str) -> bool:
    """Cross-site WebSocket hijacking guard.

    No ``Origin`` (CLI clients) is fine. A browser's ``Origin`` must be this server as the
    browser reached it (same scheme-less host:port as the ``Host`` header) or the
    configured public URL.
    """
    origin = conn.headers.get("origin")
    if not origin:
        return True
    origin = origin.strip().rstrip("/").lower()
    host = (conn.headers.get("host") or "").strip().lower()
    _, _, origin_host = origin.partition("://")
    if host and origin_host == host:
        return True
    return bool(public_url) and origin == public_url.strip().rstrip("/").lower()
