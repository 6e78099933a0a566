"""What both HTTP edges share: where a request's token is, whose ``Origin`` is allowed,
and which HTTP status a domain error is.

The control plane (FastAPI, :mod:`.security`, :mod:`.errors`) and the terminal server
(``sandbox pty-server``, plain Starlette, :mod:`.terminal_edge.pty_app`) both use this
module, so neither keeps its own copy. Starlette only (no FastAPI): the terminal server
imports it and stays small.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from ..auth.cookie import COOKIE_NAME
from ..auth.sources import TokenFound, extract_token
from ..domain.errors import (
    BackendUnavailable,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    QuotaExceeded,
    SandboxError,
    Unauthenticated,
)

__all__ = ["COOKIE_NAME", "origin_allowed", "origin_of_url", "request_token", "status_of"]


def request_token(conn: HTTPConnection, cookie_secret: str) -> TokenFound | None:
    """Bearer header, then ``?access_token=``, then the ``catalyst_session`` cookie
    (``auth.sources``); raises ``CookieRejected`` for a signed cookie that does not verify."""
    return extract_token(
        authorization=conn.headers.get("authorization"),
        query_token=conn.query_params.get("access_token"),
        cookie=conn.cookies.get(COOKIE_NAME),
        cookie_secret=cookie_secret,
    )


def origin_of_url(url: str) -> str:
    """``https://Host:8443/some/path`` → ``https://host:8443`` (what browsers send)."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return url.strip().rstrip("/").lower()
    return f"{parts.scheme}://{parts.netloc}".lower()


def _reached_as(conn: HTTPConnection) -> str:
    """This server's origin as the client reached it: scheme and ``Host``."""
    scheme = {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme)
    host = (conn.headers.get("host") or conn.url.netloc).strip()
    return f"{scheme}://{host}".lower()


def origin_allowed(conn: HTTPConnection, public_url: str) -> bool:
    """Cross-site request and WebSocket hijacking guard, one rule for both edges.

    No ``Origin`` (CLI clients) is fine. With a public URL configured, a browser's
    ``Origin`` must be that URL's origin (scheme, host and port; its path is ignored);
    without one it must be this server as the browser reached it (scheme and ``Host``).
    ``null`` (an opaque origin) never matches. Behind a TLS-terminating proxy, set the
    public URL: the request arrives as ``http`` and would not match ``https://…``.
    """
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    expected = origin_of_url(public_url) if public_url.strip() else _reached_as(conn)
    return origin == expected


# the one mapping from the domain error tree to HTTP statuses (first match wins)
_STATUS: tuple[tuple[type[SandboxError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (QuotaExceeded, 429),
    (Invalid, 400),
    (BackendUnavailable, 503),
)


def status_of(exc: SandboxError) -> int | None:
    """The HTTP status of a domain error; ``None``: an unexpected one (a 500)."""
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), None)
