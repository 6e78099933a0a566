"""Request authentication: find the token, validate it, yield the Principal.

Token sources and validation live in ``auth``; this module is the HTTP glue. The token
extractor and the ``Origin`` rule are :mod:`.edge`'s, shared with the terminal server. The source
of the token is remembered on ``request.state`` so a bad cookie can be cleared.
"""

from __future__ import annotations

from typing import Protocol

import structlog
from starlette.requests import HTTPConnection, Request

from ..auth.claims import requested_org
from ..auth.signouts import console_session_jti, issued_here_at, jwt_id
from ..auth.sources import CookieRejected
from ..domain.errors import Forbidden, Unauthenticated
from ..domain.principal import Principal
from .edge import origin_allowed, request_token

__all__ = ["Authenticator", "origin_allowed", "principal_from", "require_principal"]

log = structlog.get_logger(__name__)


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal: ...


async def principal_from(conn: HTTPConnection) -> Principal:
    """Authenticate an HTTP request or a WebSocket handshake; raise ``Unauthenticated``."""
    deps = conn.app.state.deps
    try:
        found = request_token(conn, deps.cookie_secret)
    except CookieRejected:
        conn.state.token_source = "cookie"
        raise
    if found is None:
        raise Unauthenticated("no token")
    conn.state.token_source = found.source
    if found.source == "session":  # a console session kept server-side (auth/oidc_sessions)
        sessions = getattr(deps, "oidc_sessions", None)
        if sessions is None:
            raise Unauthenticated("a console session cookie, but no OIDC sign-in here")
        resolved = await sessions.resolve(found.token)
        conn.state.token = resolved.token  # the issuer's token, refreshed; never logged
        conn.state.oidc_session = found.token  # live connections end with the session
        conn.state.principal = resolved.principal
        return resolved.principal  # type: ignore[no-any-return]
    conn.state.token = found.token  # forwarded to a sandbox's terminal server; never logged
    # a token naming several orgs is used for the one the request asks for (auth/claims)
    with requested_org(conn.headers):
        principal: Principal = await deps.authenticator.authenticate(found.token)
    # a token cookie signed out of (POST /logout) is dead for every route, though its
    # JWT has not expired (auth/signouts.py); live connections end with it
    if found.source == "cookie":
        jti = jwt_id(found.token)
        issued = None  # read only while the stored sign-outs are not loaded (the rare case)
        if jti and not deps.signouts.loaded:
            own = deps.issuer.issuer if deps.issuer is not None else None
            issued = issued_here_at(found.token, own)
        if jti and deps.signouts.ended(principal.sub, jti, issued):
            raise Unauthenticated("this console session was signed out of")
    else:
        # so is a console session's own token copied out of the cookie (not a token the
        # user signed in with at /login: that one may be their CLI's); from memory until
        # the stored sign-outs are loaded (no 503 for API clients)
        jti = console_session_jti(found.token)
        if jti and deps.signouts.known(principal.sub, jti):
            raise Unauthenticated("this console session was signed out of")
    if jti:
        conn.state.token_jti = jti
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
        and request.state.token_source in ("cookie", "session")
        and not origin_allowed(request, request.app.state.deps.settings.public_url)
    ):
        log.info("auth.cross_origin_refused", method=request.method)
        raise Forbidden(
            "a change with the session cookie must come from this server's pages",
            code="cross-origin-request",
        )
    return principal
