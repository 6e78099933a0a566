"""The terminal server's HTTP and WebSocket routes (terminal-protocol.md, exactly).

``create_pty_app`` serves the sessions of one sandbox from a :class:`TerminalRegistry`.
Token validation is injected (``authenticate`` turns a token into a Principal,
``authorize`` says whether, and as whom — ``"owner"`` or ``"admin"`` — that caller may
use this sandbox). Token extraction (Bearer header, ``?access_token=``, the
``catalyst_session`` cookie, signed or not), the ``Origin`` rule and the HTTP status of
a domain error are the control plane's own (:mod:`openova_sandbox.api.edge`).

Bodies are validated with pydantic at this edge: every malformed body is a 400 with a
detail naming the field, never a 500. WebSocket refusals follow the spec: bad or
missing token, or a foreign ``Origin``, close with 1008 after the upgrade. A client
offering the ``sandbox.v2`` subprotocol is accepted with it (:mod:`.attach`).

Share links (Kubernetes mode): the control plane relays a share link's viewer with an
``X-Sandbox-Share-Grant`` header instead of a token. ``share_grants`` (the pod's
:class:`~openova_sandbox.auth.share_grant.ShareGrantVerifier`) turns it into a
:class:`~openova_sandbox.domain.share_grant.ShareGrant` or refuses it (1008
``share-grant-invalid``); the viewer is served in the grant's mode (``read``: input
dropped, resizes ignored) and closed 1008 ``share-expired`` at the share's expiry. A
grant opens the attach route only, never the REST routes.

TCP_NODELAY: uvicorn serves through asyncio/uvloop transports, and both set
``TCP_NODELAY`` on every accepted TCP socket, so keystrokes are not held by Nagle's
algorithm (checked by an integration test).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ...config import clamp_ring_bytes
from ...domain.access import SHARE
from ...domain.errors import (
    UNSUPPORTED_SIGNAL,
    Forbidden,
    Invalid,
    NotFound,
    SandboxError,
    SessionLimit,
    Unauthenticated,
)
from ...domain.principal import Principal
from ...domain.share_grant import SHARE_GRANT_HEADER, ShareGrant
from ...domain.terminal_wire import (
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    REASON_ORIGIN,
    REASON_SHARE_EXPIRED,
    SIGNAL_HINT,
    signal_number,
)
from ...services.terminal_port import ViewerGrant, refuse
from ...terminal.metrics import CONTENT_TYPE_LATEST, TerminalMetrics
from ...terminal.registry import SessionRequest, TerminalRegistry
from ...terminal.session import rfc3339
from ..edge import origin_allowed, request_token, status_of
from .attach import DEFAULT_WINDOW, log_watch, serve_viewer
from .channel import WebSocketChannel

log = structlog.get_logger(__name__)
_M = TypeVar("_M", bound=BaseModel)

Authorize = Callable[[Principal], str | None]
"""``"owner"``/``"admin"`` when the caller may use the sandbox, else ``None``."""
VerifyGrant = Callable[[str], ShareGrant]
"""A share grant's claims, or ``Unauthenticated`` (``share-grant-invalid``)."""


def error_response(exc: SandboxError) -> JSONResponse:
    status = status_of(exc) or 500
    if status == 401:
        # the sessions API's rule: a bare 401, the reason goes to the log only
        log.info("terminal.auth.rejected", reason=exc.detail or exc.code)
        return JSONResponse({"error": "unauthenticated"}, status_code=401)
    return JSONResponse({"error": exc.code, "detail": exc.detail or exc.code}, status_code=status)


def _bad(detail: str, code: str = "invalid-request") -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=400)


class _CreateBody(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    agent: str | None = None
    extra_args: list[str] = Field(default_factory=list, alias="extraArgs")
    env_map: dict[str, str] = Field(default_factory=dict, alias="envMap")
    command: list[str] = Field(default_factory=list)
    env: list[str] = Field(default_factory=list)
    cwd: str | None = None
    rows: int = Field(24, ge=1, le=1000)
    cols: int = Field(80, ge=1, le=1000)
    ring_bytes: int | None = Field(None, alias="ringBytes")


class _ResizeBody(BaseModel):
    rows: int = Field(ge=1, le=1000)
    cols: int = Field(ge=1, le=1000)


class _SignalBody(BaseModel):
    signal: str


def _validation_detail(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nested too deep: 400
        raise Invalid(f"body is not valid JSON: {exc}", code="invalid-request") from exc


def _parse(model: type[_M], payload: Any) -> _M:
    if not isinstance(payload, dict):
        raise Invalid("body must be a JSON object", code="invalid-request")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise Invalid(_validation_detail(exc), code="invalid-request") from exc


def _request_from(body: _CreateBody, default_ring: int) -> SessionRequest:
    env: dict[str, str] = {}
    for item in body.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise Invalid(f"env entry {item!r} is not of the form K=V", code="invalid-env")
        env[name] = value
    env.update(body.env_map)
    if body.agent is not None and not body.agent.strip():
        raise Invalid("agent must not be empty", code="invalid-agent")
    return SessionRequest(
        agent=body.agent.strip() if body.agent else None,
        extra_args=tuple(body.extra_args),
        command=tuple(body.command),
        env=env,
        cwd=body.cwd or None,
        rows=body.rows,
        cols=body.cols,
        ring_bytes=clamp_ring_bytes(body.ring_bytes, default_ring)
        if body.ring_bytes is not None
        else None,
    )


def create_pty_app(
    *,
    registry: TerminalRegistry,
    sandbox_id: str,
    authenticate: Callable[[str], Awaitable[Principal]],
    authorize: Authorize,
    public_origin: str | None = None,
    cookie_secret: str = "",
    close_registry_on_shutdown: bool = True,
    probe_token: str = "",
    viewer_window: int = DEFAULT_WINDOW,
    share_grants: VerifyGrant | None = None,
) -> Starlette:
    """The pty-server ASGI app for the sessions of ``sandbox_id`` in ``registry``.

    ``cookie_secret`` verifies signed session cookies (without it only bare ones are
    read). ``probe_token``, when set, is a bearer secret that opens ``/idle`` only: the
    operator, which holds no user token, probes idleness with it. ``share_grants``
    verifies the share grants the control plane relays share-link viewers with
    (``None``: such attaches are refused).
    """
    metrics = TerminalMetrics(registry, sandbox_id=sandbox_id)
    public = public_origin or ""

    async def caller_of(conn: HTTPConnection) -> tuple[Principal, str]:
        found = request_token(conn, cookie_secret)
        if found is None:
            raise Unauthenticated("a bearer token, access_token or session cookie is required")
        principal = await authenticate(found.token)
        via = authorize(principal)
        if via is None:
            raise Forbidden("the caller neither owns this sandbox nor administers its org")
        return principal, via

    async def viewer_of(conn: HTTPConnection) -> tuple[Principal, ViewerGrant, float | None]:
        """Who attaches, with which rights, and until when (a share's expiry)."""
        presented = conn.headers.get(SHARE_GRANT_HEADER)
        if presented is None:
            principal, via = await caller_of(conn)
            return principal, ViewerGrant(who=principal.email or principal.sub, via=via), None
        if share_grants is None:
            raise Unauthenticated(
                "this terminal server has no share grant key", code="share-grant-invalid"
            )
        shared = share_grants(presented)
        email = shared.who if "@" in shared.who else ""
        viewer = ViewerGrant(who=shared.who, mode=shared.mode, via=SHARE, share_id=shared.share_id)
        return Principal(sub=shared.who, email=email), viewer, shared.share_expires_at

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                await caller_of(request)
                return await handler(request)
            except SandboxError as exc:
                return error_response(exc)

        return endpoint

    def probe_or_guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        checked = guarded(handler)

        async def endpoint(request: Request) -> Response:
            bearer = (request.headers.get("authorization") or "").partition(" ")
            offered = bearer[2].strip() if bearer[0].lower() == "bearer" else ""
            if probe_token and offered and hmac.compare_digest(offered, probe_token):
                return await handler(request)
            return await checked(request)

        return endpoint

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics_route(_: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def idle(_: Request) -> Response:
        info = registry.idle(sandbox_id)
        return JSONResponse(
            {
                "lastActivityAt": rfc3339(info.last_activity_at),
                "activeSessions": info.active_sessions,
                "attachedViewers": info.attached_viewers,
                "agentBusy": info.agent_busy,
                "activity": dict(info.activity),  # busy | waiting | idle, by terminal
            }
        )

    async def create(request: Request) -> Response:
        body = _parse(_CreateBody, await _json(request))
        session = registry.create(sandbox_id, _request_from(body, registry.ring_bytes))
        return JSONResponse(
            {"id": session.id, "createdAt": rfc3339(session.created_at)}, status_code=201
        )

    async def list_sessions(_: Request) -> Response:
        return JSONResponse({"sessions": [s.id for s in registry.list(sandbox_id)]})

    async def get_session(request: Request) -> Response:
        session = registry.get(sandbox_id, request.path_params["id"])
        return JSONResponse(session.info())

    async def delete_session(request: Request) -> Response:
        await registry.delete(sandbox_id, request.path_params["id"])
        return Response(status_code=204)

    async def resize(request: Request) -> Response:
        session = registry.get(sandbox_id, request.path_params["id"])
        body = _parse(_ResizeBody, await _json(request))
        session.resize(body.rows, body.cols)
        return Response(status_code=204)

    async def send_signal(request: Request) -> Response:
        session = registry.get(sandbox_id, request.path_params["id"])
        body = _parse(_SignalBody, await _json(request))
        sig = signal_number(body.signal)
        if sig is None:
            raise Invalid(
                f"unsupported signal {body.signal!r}: {SIGNAL_HINT}", code=UNSUPPORTED_SIGNAL
            )
        session.signal(sig)
        return Response(status_code=204)

    async def refused(websocket: WebSocket, code: int, message: str) -> None:
        await refuse(await WebSocketChannel.accept(websocket), code, message)

    async def attach(websocket: WebSocket) -> None:
        # checks come before the upgrade is accepted: an unknown session without a spec
        # is answered with a plain HTTP 404 where the server supports denial responses
        if not origin_allowed(websocket, public):
            log.info("terminal.attach.refused", reason="origin")
            await refused(websocket, CLOSE_POLICY, REASON_ORIGIN)
            return
        try:
            principal, grant, until = await viewer_of(websocket)
        except SandboxError as exc:
            log.info("terminal.attach.refused", reason=exc.code)
            await refused(websocket, CLOSE_POLICY, exc.code)
            return
        session_id = websocket.path_params["id"]
        agent = websocket.query_params.get("agent") or None
        try:
            session = registry.open(sandbox_id, session_id, agent=agent)
        except Invalid as exc:
            if exc.code == "missing-spec" and "websocket.http.response" in websocket.scope.get(
                "extensions", {}
            ):
                await websocket.send_denial_response(error_response(NotFound(exc.detail)))
                return
            # an agent that is not in the catalogue or lacks its env cannot be spawned
            await refused(websocket, CLOSE_INTERNAL, exc.detail)
            return
        except SessionLimit as exc:
            await refused(websocket, CLOSE_TRY_LATER, exc.detail)
            return
        except SandboxError as exc:
            await refused(websocket, CLOSE_INTERNAL, exc.detail)
            return
        channel = await WebSocketChannel.accept(websocket)
        log_watch(principal, sandbox_id, grant, terminal=session_id)
        work = serve_viewer(channel, session, grant, metrics=metrics, window=viewer_window)
        if until is None:
            await work
            return
        # a share's viewer ends at the share's expiry here too, whatever the relay does
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=max(0.0, until - time.time()))
        if task in done:
            task.result()
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await channel.close(CLOSE_POLICY, REASON_SHARE_EXPIRED)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        if close_registry_on_shutdown:
            await registry.close()

    routes = [
        Route("/healthz", healthz, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/idle", probe_or_guarded(idle), methods=["GET"]),
        Route("/sessions", guarded(create), methods=["POST"]),
        Route("/sessions", guarded(list_sessions), methods=["GET"]),
        Route("/sessions/{id}", guarded(get_session), methods=["GET"]),
        Route("/sessions/{id}", guarded(delete_session), methods=["DELETE"]),
        Route("/sessions/{id}/resize", guarded(resize), methods=["POST"]),
        Route("/sessions/{id}/signal", guarded(send_signal), methods=["POST"]),
        WebSocketRoute("/sessions/{id}/attach", attach),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.terminal_metrics = metrics
    return app
