"""``/preview/<sandbox>/<port>/…``: a sandbox's preview (services/previews.py), proxied
for its owner (docs/mcp.md, "Previews").

Authenticated as every route is (bearer, ``?access_token=``, the console's cookie) and
scoped as the sessions are: the sandbox's owner, or an admin of its org; anyone else
gets the 404 an unknown sandbox gets. A change made with the cookie must come from this
server's pages (the console's CSRF rule). The prefix is stripped (the preview sees
``/…``, with ``X-Forwarded-Prefix``); request and response bodies stream both ways.

What never reaches the preview: the caller's credentials (``Authorization``, the session
cookie, ``?access_token=``), which would give the sandbox its user's rights. What never
comes back from it: a ``Set-Cookie`` of the session cookie's name and
``Service-Worker-Allowed`` (a service worker of the preview's must stay within its
prefix). Its redirects to ``/…`` or to its own address are rewritten into the prefix.

A WebSocket upgrade under the same path is proxied too (a dev server's live reload):
the same checks, plus the ``Origin`` rule of the terminals' sockets and one of the
caller's WebSocket slots (issue 11's quota) for the connection's life; a refusal closes
the handshake (1008, or 1013 when the preview is not listening or the quota is full),
the subprotocol the preview picks is the one accepted, and frames are relayed both ways
until either side closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import structlog
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from ...auth.cookie import COOKIE_NAME
from ...domain.errors import BackendUnavailable, Invalid, NotFound, SandboxError
from ...domain.terminal_wire import CLOSE_POLICY, CLOSE_TRY_LATER
from ...services.previews import PATH_PREFIX, PreviewsService, check_port
from ..errors import error_body
from ..security import origin_allowed, principal_from, require_principal

log = structlog.get_logger(__name__)
router = APIRouter(include_in_schema=False)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
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


def _previews(request: Request) -> PreviewsService:
    previews: PreviewsService | None = getattr(request.app.state.deps, "previews", None)
    if previews is None:
        raise NotFound("previews are not served here", code="previews-not-served")
    return previews


def _port(text: str) -> int:
    if not text.isdigit():
        raise Invalid(f"{text!r} is not a port number", code="invalid-port")
    return check_port(int(text))


def _cookies_without_session(header: str) -> str:
    """The ``Cookie`` header minus the console's session cookie."""
    kept = []
    for part in header.split(";"):
        name = part.split("=", 1)[0].strip()
        if name and name != COOKIE_NAME:
            kept.append(part.strip())
    return "; ".join(kept)


def _forwarded_headers(request: Request | WebSocket, prefix: str) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
    cookie = _cookies_without_session(request.headers.get("cookie", ""))
    if cookie:
        headers.append(("cookie", cookie))
    headers += [
        ("x-forwarded-host", request.headers.get("host", "")),
        (
            "x-forwarded-proto",
            {"ws": "http", "wss": "https"}.get(request.url.scheme, request.url.scheme),
        ),
        ("x-forwarded-prefix", prefix.rstrip("/")),
    ]
    return headers


def _target(conn: Request | WebSocket, sandbox: str, port: str, path: str) -> str:
    """The path to ask the preview for, as the client wrote it (still percent-encoded:
    a decoded ``%2F`` or ``%3F`` would change what is asked), without the prefix."""
    raw = (conn.scope.get("raw_path") or b"").decode("latin-1")
    marker = f"{PATH_PREFIX}/{sandbox}/{port}/"
    return raw[len(marker) :] if raw.startswith(marker) else quote(path)


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


def _set_cookies(values: list[str]) -> list[str]:
    """The preview's cookies, minus any of the console session cookie's name."""
    kept = []
    for value in values:
        parsed: SimpleCookie = SimpleCookie()
        with contextlib.suppress(Exception):
            parsed.load(value)
        if COOKIE_NAME in parsed or value.split("=", 1)[0].strip() == COOKIE_NAME:
            continue
        kept.append(value)
    return kept


@router.api_route(f"{PATH_PREFIX}/{{sandbox}}/{{port}}", methods=METHODS)
async def preview_root(request: Request, sandbox: str, port: str) -> Response:
    """The preview's root without its slash: the same place with it (relative links)."""
    await _resolve(request, sandbox, port)
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"{PATH_PREFIX}/{sandbox}/{port}/{query}", status_code=307)


async def _resolve(request: Request, name: str, port_text: str) -> tuple[str, int, str]:
    """Authenticate, find the caller's sandbox and the preview's upstream address."""
    principal = await require_principal(request)
    previews = _previews(request)
    port = _port(port_text)
    sandbox = await request.app.state.deps.sessions.get(principal, name)
    host = previews.upstream(sandbox, port)
    return host, port, f"{PATH_PREFIX}/{name}/{port}/"


@router.api_route(f"{PATH_PREFIX}/{{sandbox}}/{{port}}/{{path:path}}", methods=METHODS)
async def preview(request: Request, sandbox: str, port: str, path: str) -> Response:
    host, number, prefix = await _resolve(request, sandbox, port)
    shown = f"[{host}]" if ":" in host else host
    query = urlencode(
        [(k, v) for k, v in request.query_params.multi_items() if k != "access_token"]
    )
    url = f"http://{shown}:{number}/{_target(request, sandbox, port, path)}"
    url += f"?{query}" if query else ""
    body = request.stream() if request.method not in ("GET", "HEAD") else None
    client = _previews(request).http()
    upstream = client.build_request(
        request.method, url, headers=_forwarded_headers(request, prefix), content=body
    )
    try:
        answer = await client.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        log.info("preview.upstream_failed", sandbox=sandbox, port=number, error=type(exc).__name__)
        detail = f"the preview on port {number} did not answer: {type(exc).__name__}"
        return JSONResponse(error_body("preview-unreachable", detail), status_code=502)
    headers: list[tuple[str, str]] = []
    for key, value in answer.headers.multi_items():
        lower = key.lower()
        if lower in DROPPED_BACK:
            continue
        if lower == "location":
            value = _location(value, prefix, number)
        headers.append((lower, value))
    for cookie in _set_cookies(answer.headers.get_list("set-cookie")):
        headers.append(("set-cookie", cookie))
    response = StreamingResponse(
        _body(answer),
        status_code=answer.status_code,
        background=BackgroundTask(answer.aclose),
    )
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return response


async def _body(answer: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    except httpx.HTTPError:
        return  # the preview went away mid-answer: the client sees a short body


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


@router.websocket(f"{PATH_PREFIX}/{{sandbox}}/{{port}}/{{path:path}}")
async def preview_socket(websocket: WebSocket, sandbox: str, port: str, path: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    deps = websocket.app.state.deps
    if not origin_allowed(websocket, deps.settings.public_url):
        await websocket.close(CLOSE_POLICY, "cross-origin")
        return
    try:
        principal = await principal_from(websocket)
        previews: PreviewsService | None = getattr(deps, "previews", None)
        if previews is None:
            raise NotFound("previews are not served here", code="previews-not-served")
        number = _port(port)
        found = await deps.sessions.get(principal, sandbox)
        host = previews.upstream(found, number)
    except BackendUnavailable as exc:
        await websocket.close(CLOSE_TRY_LATER, exc.code)
        return
    except SandboxError as exc:
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
    prefix = f"{PATH_PREFIX}/{sandbox}/{number}/"
    shown = f"[{host}]" if ":" in host else host
    query = urlencode(
        [(k, v) for k, v in websocket.query_params.multi_items() if k != "access_token"]
    )
    url = f"ws://{shown}:{number}/{_target(websocket, sandbox, port, path)}"
    url += f"?{query}" if query else ""
    headers = [
        (k, v) for k, v in _forwarded_headers(websocket, prefix) if k.lower() not in WS_HANDSHAKE
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
        await websocket.accept(subprotocol=upstream.subprotocol)
        await _relay(websocket, upstream)
    finally:
        await upstream.close()
        if held is not None:
            held.release()


async def _relay(websocket: WebSocket, upstream: Any) -> None:
    """Frames both ways until either side closes; the other side is closed with it."""
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
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            with contextlib.suppress(ConnectionClosed, WebSocketDisconnect, RuntimeError):
                task.result()
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(RuntimeError):
            await websocket.close()
