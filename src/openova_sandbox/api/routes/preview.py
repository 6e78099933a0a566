"""``/preview/<sandbox>/<port>/…``: a sandbox's preview (services/previews.py), proxied
for its owner (docs/mcp.md, "Previews").

Two kinds of address. The **link**, ``/preview/<sandbox>/<port>/…`` (what
``preview.start`` answers), is authenticated as every route is (bearer,
``?access_token=``, the console's cookie) and scoped as the sessions are: the sandbox's
owner, or an admin of its org; anyone else gets the 404 an unknown sandbox gets. It
serves nothing itself: it answers a redirect (307, no-store) into the **capability
path** ``/preview/<sandbox>/<port>/~<grant>/…``, the grant (domain/preview_grant.py)
minted for that user, that port and that run of the preview. Requests under the
capability path are authenticated by the grant alone (the user's access is checked
again from it), never by a cookie or a bearer.

Every answer under the capability path carries ``Content-Security-Policy: sandbox …``
without ``allow-same-origin``: the preview's pages run in an opaque origin, so the
browser gives their scripts neither the console's ``SameSite=Strict`` cookie nor its
storage, and their requests to the API are cross-site requests without credentials.
Those requests to the preview itself are CORS requests (``Origin: null``): capability
answers allow them, and preflights are answered here (the grant is the secret, not a
credential the browser adds). A grant that no longer opens the preview (expired, the
sign-in it was minted from ended, the preview stopped or started again, the sandbox
gone, access lost) is a 401; on a page load the browser is sent back to the link
instead, which signs a new one for a signed-in user.

The prefix is stripped (the preview sees ``/…``, with ``X-Forwarded-Prefix``); request
and response bodies stream both ways. What never reaches the preview: the caller's
credentials (``Authorization``, the session cookie, ``?access_token=``). What never
comes back from it: a ``Set-Cookie`` of the session cookie's name (the others are
scoped to the preview's link and this host) and ``Service-Worker-Allowed``. Its
redirects to ``/…`` or to its own address are rewritten into the prefix.

A WebSocket upgrade is proxied too (a dev server's live reload): under the capability
path with the grant's checks (the page's ``Origin`` is ``null``), under the link with
the link's checks plus the ``Origin`` rule of the terminals' sockets; either holds one
of the user's WebSocket slots (issue 11's quota) for the connection's life. A refusal
closes the handshake (1008, or 1013 when the preview is not listening or the quota is
full), the subprotocol the preview picks is the one accepted, and frames are relayed
both ways until either side closes, or until the grant (the token, through the link)
expires or the sign-in it came from ends, which closes it 1008 as a terminal's.

What the proxy serves is the owner's use of the sandbox, its activity as typing in a
terminal is (services/preview_use.py): each request under the capability path, each
chunk of an answer streamed back, and a WebSocket for as long as it is open. A preview
process running with nobody using it is not activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import structlog
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection

from ...auth.cookie import COOKIE_NAME, derived_key
from ...auth.oidc_sessions import REASON_SIGNED_OUT
from ...auth.signouts import jwt_id
from ...domain.errors import (
    BackendUnavailable,
    Invalid,
    NotFound,
    SandboxError,
    Unauthenticated,
)
from ...domain.model import Sandbox
from ...domain.preview_grant import (
    EXPIRED,
    GRANT_MARK,
    GRANT_TTL_SECONDS,
    KEY_LABEL,
    VIA_JWT,
    VIA_SESSION,
    VIA_TOKEN,
    GrantRefused,
    PreviewGrant,
    credential,
    mint_grant,
    read_grant,
    via_of,
)
from ...domain.principal import Principal
from ...domain.terminal_wire import CLOSE_POLICY, CLOSE_TRY_LATER, REASON_TOKEN_EXPIRED
from ...services.kube_previews import PreviewBackend
from ...services.previews import PATH_PREFIX, check_port
from ...services.tokens import REASON_TOKEN_REVOKED
from ..errors import error_body, to_response
from ..security import origin_allowed, principal_from, require_principal

log = structlog.get_logger(__name__)
router = APIRouter(include_in_schema=False)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# the sandbox flags of every capability answer: scripts, forms, popups, dialogs and
# downloads work; without allow-same-origin the page's origin is opaque (no cookie, no
# storage of the console's origin), and its popups inherit the flags
SANDBOX_POLICY = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
PREFLIGHT_MAX_AGE = "600"
REVOKED = "preview-grant-revoked"
# RFC 9110 7.6.1 hop-by-hop headers, the caller's credentials and what the proxy sets
# itself (a body's Content-Length goes on: without it the body is sent chunked, which
# simple servers do not read)
HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
        "cookie",
    }
)
DROPPED_BACK = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "service-worker-allowed",
        "set-cookie",
    }
)


@dataclass(frozen=True)
class Place:
    """Where a request under ``/preview/<sandbox>/<port>/`` goes: the grant of a
    capability path (``None`` under the link), the prefix the preview lives under and
    the rest of the path, as the client encoded it."""

    grant: str | None
    prefix: str
    rest: str
    bare: bool = False  # ``…/~<grant>`` without its slash


def _previews(conn: HTTPConnection) -> PreviewBackend:
    previews: PreviewBackend | None = getattr(conn.app.state.deps, "previews", None)
    if previews is None:
        raise NotFound("previews are not served here", code="previews-not-served")
    return previews


def _port(text: str) -> int:
    if not text.isdigit():
        raise Invalid(f"{text!r} is not a port number", code="invalid-port")
    return check_port(int(text))


def _place(conn: HTTPConnection, sandbox: str, port: str, path: str) -> Place:
    """The path to ask the preview for, as the client wrote it (still percent-encoded:
    a decoded ``%2F`` or ``%3F`` would change what is asked), without the prefix; the
    grant first when the path is a capability path."""
    raw = (conn.scope.get("raw_path") or b"").decode("latin-1")
    link = f"{PATH_PREFIX}/{sandbox}/{port}/"
    target = raw[len(link) :] if raw.startswith(link) else quote(path)
    if not target.startswith(GRANT_MARK):
        return Place(None, link, target)
    grant, slash, rest = target[len(GRANT_MARK) :].partition("/")
    return Place(grant, f"{link}{GRANT_MARK}{grant}/", rest, bare=not slash)


def _query(conn: HTTPConnection) -> str:
    """The query without ``access_token`` (a credential of the caller's)."""
    query = urlencode([(k, v) for k, v in conn.query_params.multi_items() if k != "access_token"])
    return f"?{query}" if query else ""


def _cookies_without_session(header: str) -> str:
    """The ``Cookie`` header minus the console's session cookie."""
    kept = []
    for part in header.split(";"):
        name = part.split("=", 1)[0].strip()
        if name and name != COOKIE_NAME:
            kept.append(part.strip())
    return "; ".join(kept)


def _forwarded_headers(conn: HTTPConnection, prefix: str) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in conn.headers.items() if k.lower() not in HOP]
    cookie = _cookies_without_session(conn.headers.get("cookie", ""))
    if cookie:
        headers.append(("cookie", cookie))
    headers += [
        ("x-forwarded-host", conn.headers.get("host", "")),
        (
            "x-forwarded-proto",
            {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme),
        ),
        ("x-forwarded-prefix", prefix.rstrip("/")),
    ]
    return headers


def _location(value: str, prefix: str, upstream_port: int) -> str:
    """A redirect of the preview's to ``/x`` or to its own address, inside the prefix."""
    parts = urlsplit(value)
    own = parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port == upstream_port
    if parts.scheme and not own:
        return value
    if not parts.scheme and (parts.netloc or not value.startswith("/")):
        return value  # //elsewhere, or relative: the browser resolves it in the prefix
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{prefix.rstrip('/')}{path}{query}{fragment}"


def _set_cookies(values: list[str], link: str) -> list[str]:
    """The preview's cookies, minus any of the console session cookie's name, each
    scoped to the preview's own link (``Path=/preview/<sandbox>/<port>/``, the
    capability paths lie under it) and to this host (``Domain`` dropped): a preview
    cannot set a cookie the console, its sign-in or another preview would receive."""
    kept = []
    for value in values:
        parsed: SimpleCookie = SimpleCookie()
        with contextlib.suppress(Exception):
            parsed.load(value)
        if COOKIE_NAME in parsed or value.split("=", 1)[0].strip() == COOKIE_NAME:
            continue
        pair, *attributes = value.split(";")
        scoped = [
            a.strip()
            for a in attributes
            if a.split("=", 1)[0].strip().lower() not in ("path", "domain") and a.strip()
        ]
        kept.append("; ".join([pair.strip(), *scoped, f"Path={link}"]))
    return kept


# ---------------------------------------------------------------- grants
def _grant_key(conn: HTTPConnection) -> bytes:
    return derived_key(conn.app.state.deps.cookie_secret, KEY_LABEL)


def _credential(conn: HTTPConnection, principal: Principal) -> str:
    """What names the sign-in of an authenticated connection (domain/preview_grant.py):
    its console session, else its personal access token, else its JWT's ``jti``."""
    sid = getattr(conn.state, "oidc_session", None)
    sessions = getattr(conn.app.state.deps, "oidc_sessions", None)
    if sid and sessions is not None:
        return credential(VIA_SESSION, sessions.handle(sid))
    if principal.via_token:
        return credential(VIA_TOKEN, principal.via_token)
    return credential(VIA_JWT, jwt_id(getattr(conn.state, "token", "") or ""))


async def _sign_in_on(conn: HTTPConnection, sub: str, via: tuple[str, str]) -> None:
    """``GrantRefused`` (``preview-grant-revoked``) when the sign-in ``via`` names has
    ended: the console session signed out of (or expired, or refused a refresh), the
    access token revoked, the token cookie signed out of. Each as a request with that
    credential finds it: the session and the token from this process's copy of the
    last 2 s (at once after a sign-out or revocation through this process), a token
    cookie's sign-out from memory; no database read per request."""
    kind, ident = via
    deps = conn.app.state.deps
    if kind == VIA_SESSION:
        sessions = getattr(deps, "oidc_sessions", None)
        on = sessions is not None and await sessions.live(ident)
        why = "the console session it was opened from has ended (signed out, or expired)"
    elif kind == VIA_TOKEN:
        tokens = getattr(deps, "tokens", None)
        on = tokens is not None and not await tokens.revoked(ident)
        why = "the access token it was opened with has been revoked"
    elif kind == VIA_JWT:
        on = not deps.signouts.ended(sub, ident)
        why = "the sign-in it was opened from has been signed out of"
    else:
        return
    if not on:
        raise GrantRefused(f"this preview address no longer opens it: {why}", code=REVOKED)


async def _mint(conn: HTTPConnection, principal: Principal, sandbox: Sandbox, port: int) -> str:
    """A grant of ``port`` of ``sandbox`` (its preview's current run) for ``principal``,
    bound to the caller's sign-in, expiring after ``GRANT_TTL_SECONDS`` and never after
    the caller's own token."""
    now = int(time.time())
    expires = now + GRANT_TTL_SECONDS
    if principal.expires_at is not None:
        expires = min(expires, int(principal.expires_at))
    if expires <= now:  # a token past its exp still within the validator's leeway
        raise Unauthenticated("the sign-in has expired")
    bound = _credential(conn, principal)
    try:  # a token whose cookie was signed out of: no grant (it would be refused)
        await _sign_in_on(conn, principal.sub, via_of(bound))
    except GrantRefused as exc:
        raise Unauthenticated(exc.detail) from exc
    grant = PreviewGrant(
        namespace=sandbox.namespace,
        sandbox=sandbox.name,
        port=port,
        instance=_previews(conn).instance(sandbox, port),
        sub=principal.sub,
        email=principal.email,
        org=principal.org,
        roles=tuple(sorted(principal.roles)),
        tier=principal.tier,
        expires_at=expires,
        credential=bound,
    )
    return mint_grant(_grant_key(conn), grant)


async def _granted(
    conn: HTTPConnection, name: str, port_text: str, text: str
) -> tuple[PreviewGrant, Principal, int, str]:
    """What the grant ``text`` opens: the grant, its user (access to the sandbox checked
    again), the port and the preview's upstream address. ``GrantRefused`` when it opens
    nothing (``preview-grant-revoked``: the sign-in it came from ended, the preview
    stopped or started again, the sandbox is gone or the user lost access); 503 while
    the preview is not listening."""
    previews = _previews(conn)
    port = _port(port_text)
    grant = read_grant(_grant_key(conn), text, sandbox=name, port=port, now=time.time())
    await _sign_in_on(conn, grant.sub, grant.via)
    principal = Principal(
        sub=grant.sub,
        email=grant.email,
        org=grant.org,
        roles=frozenset(grant.roles),
        tier=grant.tier,
        expires_at=float(grant.expires_at),
    )
    try:
        sandbox = await conn.app.state.deps.sessions.get(principal, name)
        instance = previews.instance(sandbox, port)
    except NotFound as exc:
        raise GrantRefused(
            f"this preview address no longer opens it ({exc.detail})", code=REVOKED
        ) from exc
    if sandbox.namespace != grant.namespace or instance != grant.instance:
        raise GrantRefused(
            f"the preview on port {port} was started again since this address was made",
            code=REVOKED,
        )
    return grant, principal, port, previews.upstream(sandbox, port)


def _capability_headers(
    request: Request, names: list[str], policies: list[str] | None = None
) -> list[tuple[str, str]]:
    """What every capability answer carries: the sandbox policy, and the CORS answer
    that lets the preview's own opaque-origin page read it (the request's ``Origin``
    echoed, else ``*``; ``names``: the answer's headers, exposed to its scripts).

    The preview's own policies (``policies``) are kept, in the same header after ours
    (a comma separates policies, each enforced): one header, because the frame guard
    (api/frame_guard.py) rewrites an HTML answer's policy header into one value, which
    would drop every header but the first."""
    policy = ", ".join([SANDBOX_POLICY, *(p for p in policies or () if p.strip())])
    headers = [("content-security-policy", policy)]
    origin = request.headers.get("origin")
    if origin:
        headers += [
            ("access-control-allow-origin", origin),
            ("access-control-allow-credentials", "true"),
            ("vary", "Origin"),
        ]
    else:
        headers.append(("access-control-allow-origin", "*"))
    exposed = sorted({n for n in names if not n.startswith("access-control-")})
    if exposed:
        headers.append(("access-control-expose-headers", ", ".join(exposed)))
    return headers


def _refused(
    request: Request, sandbox: str, port: str, place: Place, exc: GrantRefused
) -> Response:
    """A grant that opens nothing: a page load goes back to the link (which signs a new
    grant for a signed-in user); anything else is a 401 saying why."""
    log.info("preview.grant_refused", sandbox=sandbox, port=port, code=exc.code)
    navigating = request.headers.get("sec-fetch-mode") == "navigate"
    if navigating and request.method in ("GET", "HEAD"):
        link = f"{PATH_PREFIX}/{sandbox}/{port}/{place.rest}{_query(request)}"
        return RedirectResponse(link, status_code=303, headers={"cache-control": "no-store"})
    response = JSONResponse(error_body(exc.code, exc.detail), status_code=401)
    for key, value in _capability_headers(request, []):
        response.headers.append(key, value)
    return response


# ---------------------------------------------------------------- HTTP
@router.api_route(f"{PATH_PREFIX}/{{sandbox}}/{{port}}", methods=METHODS)
async def preview_root(request: Request, sandbox: str, port: str) -> Response:
    """The preview's root without its slash: the same place with it (relative links)."""
    await _resolve(request, sandbox, port)
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"{PATH_PREFIX}/{sandbox}/{port}/{query}", status_code=307)


async def _resolve(request: Request, name: str, port_text: str) -> tuple[Principal, Sandbox, int]:
    """Authenticate, find the caller's sandbox, check the preview serves."""
    principal = await require_principal(request)
    previews = _previews(request)
    port = _port(port_text)
    sandbox = await request.app.state.deps.sessions.get(principal, name)
    previews.upstream(sandbox, port)
    return principal, sandbox, port


@router.api_route(f"{PATH_PREFIX}/{{sandbox}}/{{port}}/{{path:path}}", methods=METHODS)
async def preview(request: Request, sandbox: str, port: str, path: str) -> Response:
    place = _place(request, sandbox, port, path)
    if place.grant is None:
        # the link: the signed-in user is sent into a capability path of their own
        principal, found, number = await _resolve(request, sandbox, port)
        grant = await _mint(request, principal, found, number)
        target = f"{place.prefix}{GRANT_MARK}{grant}/{place.rest}{_query(request)}"
        return RedirectResponse(
            target,
            status_code=307,
            headers={"cache-control": "no-store", "referrer-policy": "no-referrer"},
        )
    try:
        granted, _, number, host = await _granted(request, sandbox, port, place.grant)
    except GrantRefused as exc:
        return _refused(request, sandbox, port, place, exc)
    except SandboxError as exc:  # 503 starting/exited…: readable by the preview's page
        unavailable = to_response(request, exc)
        for key, value in _capability_headers(request, []):
            unavailable.headers.append(key, value)
        return unavailable
    previews = _previews(request)

    def used() -> None:  # the owner's use: the sandbox's activity (services/preview_use.py)
        previews.used(granted.namespace, sandbox)

    used()
    if place.bare:
        return RedirectResponse(f"{place.prefix}{_query(request)}", status_code=307)
    if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
        return _preflight(request)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{number}/{place.rest}{_query(request)}"
    body = request.stream() if request.method not in ("GET", "HEAD") else None
    client = previews.http()
    upstream = client.build_request(
        request.method, url, headers=_forwarded_headers(request, place.prefix), content=body
    )
    try:
        answer = await client.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        log.info("preview.upstream_failed", sandbox=sandbox, port=number, error=type(exc).__name__)
        detail = f"the preview on port {number} did not answer: {type(exc).__name__}"
        failed = JSONResponse(error_body("preview-unreachable", detail), status_code=502)
        for key, value in _capability_headers(request, []):
            failed.headers.append(key, value)
        return failed
    headers: list[tuple[str, str]] = []
    policies: list[str] = []
    for key, value in answer.headers.multi_items():
        lower = key.lower()
        if lower == "content-security-policy":
            policies.append(value)
            continue
        if lower in DROPPED_BACK or lower.startswith("access-control-"):
            continue
        if lower == "location":
            value = _location(value, place.prefix, number)
        headers.append((lower, value))
    link = f"{PATH_PREFIX}/{sandbox}/{number}/"
    for cookie in _set_cookies(answer.headers.get_list("set-cookie"), link):
        headers.append(("set-cookie", cookie))
    headers += _capability_headers(request, [k for k, _ in headers], policies)
    response = StreamingResponse(
        _body(answer, used),
        status_code=answer.status_code,
        background=BackgroundTask(answer.aclose),
    )
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return response


def _preflight(request: Request) -> Response:
    """A CORS preflight of the preview's own page (its origin is opaque): allowed, for
    the methods and headers it asks; the preview is not asked (servers that were
    written for one origin do not answer OPTIONS)."""
    response = Response(status_code=204)
    for key, value in _capability_headers(request, []):
        response.headers.append(key, value)
    response.headers["access-control-allow-methods"] = ", ".join(METHODS)
    asked = request.headers.get("access-control-request-headers")
    if asked:
        response.headers["access-control-allow-headers"] = asked
    response.headers["access-control-max-age"] = PREFLIGHT_MAX_AGE
    return response


async def _body(answer: httpx.Response, used: Callable[[], None]) -> AsyncIterator[bytes]:
    """The preview's answer as it comes; each chunk is use (a long stream, such as a dev
    server's event stream, keeps its sandbox in use while it flows)."""
    try:
        async for chunk in answer.aiter_raw():
            used()
            yield chunk
    except httpx.HTTPError:
        return  # the preview went away mid-answer: the client sees a short body


# ---------------------------------------------------------------- WebSocket
WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
WS_MAX_MESSAGE = 16 * 1024 * 1024
CLOSE_ERROR = 1011


async def _socket_through_link(
    websocket: WebSocket, sandbox: str, port: str
) -> tuple[Principal, str, int, str]:
    deps = websocket.app.state.deps
    if not origin_allowed(websocket, deps.settings.public_url):
        raise _Refused(CLOSE_POLICY, "cross-origin")
    principal = await principal_from(websocket)
    previews = _previews(websocket)
    number = _port(port)
    found = await deps.sessions.get(principal, sandbox)
    return principal, found.namespace, number, previews.upstream(found, number)


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@router.websocket(f"{PATH_PREFIX}/{{sandbox}}/{{port}}/{{path:path}}")
async def preview_socket(websocket: WebSocket, sandbox: str, port: str, path: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    deps = websocket.app.state.deps
    place = _place(websocket, sandbox, port, path)
    try:
        if place.grant is None:
            principal, namespace, number, host = await _socket_through_link(
                websocket, sandbox, port
            )
            via = via_of(_credential(websocket, principal))
            expiry = (principal.expires_at, REASON_TOKEN_EXPIRED)
        else:  # the grant is the secret: the page's opaque origin says ``Origin: null``
            grant, principal, number, host = await _granted(websocket, sandbox, port, place.grant)
            via, expiry = grant.via, (float(grant.expires_at), EXPIRED)
            namespace = grant.namespace
    except _Refused as exc:
        await websocket.close(exc.code, exc.reason)
        return
    except BackendUnavailable as exc:
        await websocket.close(CLOSE_TRY_LATER, exc.code)
        return
    except SandboxError as exc:
        if isinstance(exc, GrantRefused):
            log.info("preview.grant_refused", sandbox=sandbox, port=port, code=exc.code)
        await websocket.close(CLOSE_POLICY, exc.code)
        return
    quotas = getattr(deps, "quotas", None)
    held = None
    if quotas is not None:
        try:
            held = await quotas.hold("websockets", principal)
        except SandboxError as exc:
            await websocket.close(CLOSE_TRY_LATER, exc.code)
            return
    shown = f"[{host}]" if ":" in host else host
    url = f"ws://{shown}:{number}/{place.rest}{_query(websocket)}"
    headers = [
        (k, v)
        for k, v in _forwarded_headers(websocket, place.prefix)
        if k.lower() not in WS_HANDSHAKE
    ]
    offered = websocket.scope.get("subprotocols") or None
    try:
        upstream = await connect(
            url,
            additional_headers=headers,
            subprotocols=offered,
            open_timeout=5,
            max_size=WS_MAX_MESSAGE,
            proxy=None,
        )
    except (OSError, TimeoutError, WebSocketException) as exc:
        if held is not None:
            held.release()
        log.info("preview.socket_failed", sandbox=sandbox, port=number, error=type(exc).__name__)
        await websocket.close(CLOSE_ERROR, "preview-unreachable")
        return
    try:
        # open, it is the owner's use of the sandbox (services/preview_use.py)
        with _previews(websocket).holding(namespace, sandbox):
            await websocket.accept(subprotocol=upstream.subprotocol)
            ends = _socket_ends(websocket, principal.sub, via, expiry)
            await _relay(websocket, upstream, ends)
    finally:
        await upstream.close()
        if held is not None:
            held.release()


Ends = list[tuple[Awaitable[object], str]]


def _socket_ends(
    conn: HTTPConnection, sub: str, via: tuple[str, str], expiry: tuple[float | None, str]
) -> Ends:
    """What ends a preview socket before either side closes it, as a terminal's
    (api/routes/terminals.py): its grant's (or token's) expiry, and the end of the
    sign-in it came from, each with its close reason: the console session's sign-out
    (at once through this process, else at its next look at the database), the access
    token's revocation (likewise), the token cookie's sign-out."""
    deps = conn.app.state.deps
    ends: Ends = []
    at, reason = expiry
    if at is not None:
        ends.append((asyncio.sleep(max(0.0, at - time.time())), reason))
    kind, ident = via
    sessions = getattr(deps, "oidc_sessions", None)
    tokens = getattr(deps, "tokens", None)
    if kind == VIA_SESSION and sessions is not None:
        ends.append((sessions.wait_ended_key(ident), REASON_SIGNED_OUT))
    elif kind == VIA_TOKEN and tokens is not None:
        ends.append((tokens.wait_revoked(ident), REASON_TOKEN_REVOKED))
    elif kind == VIA_JWT:
        ends.append((deps.signouts.wait(sub, ident), REASON_SIGNED_OUT))
    return ends


async def _relay(websocket: WebSocket, upstream: Any, ends: Ends) -> None:
    """Frames both ways until either side closes (the other side is closed with it) or
    one of ``ends`` happens (the client's side is closed 1008 with its reason)."""
    from starlette.websockets import WebSocketDisconnect
    from websockets.exceptions import ConnectionClosed

    async def inbound() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    async def outbound() -> None:
        async for message in upstream:
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
            else:
                await websocket.send_text(message)

    tasks = [asyncio.create_task(inbound()), asyncio.create_task(outbound())]
    waits = {asyncio.ensure_future(end): reason for end, reason in ends}
    code, why = 1000, None
    try:
        done, _ = await asyncio.wait([*tasks, *waits], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in waits:
                if not task.cancelled() and task.exception() is None and why is None:
                    code, why = CLOSE_POLICY, waits[task]
                continue
            with contextlib.suppress(ConnectionClosed, WebSocketDisconnect, RuntimeError):
                task.result()
        if why is not None:
            log.info("preview.socket_ended", reason=why)
    finally:
        for task in [*tasks, *waits]:
            task.cancel()
        with contextlib.suppress(RuntimeError):
            await websocket.close(code, why)
