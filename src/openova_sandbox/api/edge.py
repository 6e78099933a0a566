"""What both HTTP edges share: where a request's token is, whose ``Origin`` is allowed,
and which HTTP status a domain error is.

The control plane (FastAPI, :mod:`.security`, :mod:`.errors`) and the terminal server
(``sandbox pty-server``, plain Starlette, :mod:`.terminal_edge.pty_app`) both use this
module, so neither keeps its own copy. No web framework: a request is anything with
Starlette's reading surface (:class:`Connection`: ``headers``, ``query_params``,
``cookies``, ``url``), so the terminal server's own HTTP server (``sandbox pty-server``,
:mod:`.terminal_edge.pty_server`) uses it without importing Starlette.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

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

__all__ = [
    "COOKIE_NAME",
    "Connection",
    "origin_allowed",
    "origin_of_url",
    "request_token",
    "status_of",
]


class _URL(Protocol):
    @property
    def scheme(self) -> str: ...

    @property
    def netloc(self) -> str: ...


class Connection(Protocol):
    """What the rules read of a request or WebSocket upgrade (Starlette's
    ``HTTPConnection`` has it; so has the pty-server's own request)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def query_params(self) -> Mapping[str, str]: ...

    @property
    def cookies(self) -> Mapping[str, str]: ...

    @property
    def url(self) -> _URL: ...


def request_token(conn: Connection, cookie_secret: str) -> TokenFound | None:
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


def _reached_as(conn: Connection) -> tuple[str, str]:
    """This server as the client reached it: scheme (``http``/``https``) and ``Host``."""
    scheme = {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme)
    host = (conn.headers.get("host") or conn.url.netloc).strip()
    return scheme.lower(), host.lower()


def origin_allowed(conn: Connection, public_url: str) -> bool:
    """Cross-site request and WebSocket hijacking guard, one rule for both edges.

    No ``Origin`` (CLI clients) is fine. With a public URL configured, a browser's
    ``Origin`` must be that URL's origin (scheme, host and port; its path is ignored).
    Without one it must be this server as the browser reached it: the ``Host`` it used,
    and the same scheme — except that an ``https`` page may reach a plain-``http``
    listener (TLS ended by a proxy in front); an ``http`` page never reaches an
    ``https`` one. ``null`` (an opaque origin) never matches.
    """
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if public_url.strip():
        return origin == origin_of_url(public_url)
    scheme, _, host = origin.partition("://")
    reached_scheme, reached_host = _reached_as(conn)
    if not host or host != reached_host:
        return False
    return scheme == reached_scheme or (scheme == "https" and reached_scheme == "http")


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
