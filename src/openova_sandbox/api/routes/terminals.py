"""Terminal endpoints of the control plane: attach (WebSocket), resize, signal, and
extra terminals. Same auth and ownership rules as the REST routes.

Attaching before the sandbox is Ready waits (up to ``READY_WAIT`` seconds) and then
closes with 1013 "try again later"; a Failed sandbox closes with 1011 and the reason
written into the terminal, except one failed with ``AgentUnavailable``: attaching to it
tries to start the agent again. A bad token or a foreign ``Origin`` closes with 1008.
A connection opened with a token that expires closes with 1008 ``token-expired`` at the
token's ``exp`` (cookie sessions too: the cookie carries a token), waiting or attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from ...domain.errors import UNSUPPORTED_SIGNAL, Conflict, Invalid, NotFound, SandboxError
from ...domain.model import Sandbox
from ...domain.principal import Principal
from ...domain.status import FAILED, READY, SUSPENDED, agent_unavailable
from ...services.terminal_port import SIGNAL_NAMES
from ...terminal.ws import close_with_message
from .. import schemas
from ..json_body import load_json
from ..security import origin_allowed, principal_from, require_principal

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/v1/sandbox/sessions", tags=["terminals"])
Caller = Annotated[Principal, Depends(require_principal)]

READY_WAIT = 30.0
POLL = 0.2
CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1008, 1011, 1013
TOKEN_EXPIRED = "token-expired"

_E = schemas.ErrorBody
_COMMON: dict[int | str, dict[str, Any]] = {
    400: {"model": _E},
    401: {"model": schemas.Unauthenticated},
    404: {"model": _E},
    500: {"model": _E},
    503: {"model": _E},
}


def _json_body(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_RESIZE = _json_body(schemas.ResizeBody)
_SIGNAL = _json_body(schemas.SignalBody)


def _body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise Invalid("request body required", code="empty-body")
    body = load_json(raw)
    if not isinstance(body, dict):
        raise Invalid("request body must be a JSON object", code="invalid-json")
    return body


def _size(body: dict[str, Any]) -> tuple[int, int]:
    rows, cols = body.get("rows"), body.get("cols")
    for label, value in (("rows", rows), ("cols", cols)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
            raise Invalid(f"{label} must be an integer from 1 to 1000", code="invalid-size")
    return int(rows), int(cols)  # type: ignore[arg-type]


def _signal(body: dict[str, Any]) -> str:
    name = body.get("signal")
    if not isinstance(name, str) or name.strip().upper() not in SIGNAL_NAMES:
        raise Invalid("use INT, QUIT, TERM or HUP", code=UNSUPPORTED_SIGNAL)
    return name.strip().upper()


def _token(conn: HTTPConnection) -> str:
    return str(getattr(conn.state, "token", ""))


# ------------------------------------------------------------------ REST
async def _resize(
    request: Request, caller: Principal, sandbox_id: str, tid: str | None
) -> Response:
    rows, cols = _size(_body(await request.body()))
    terminals = request.app.state.deps.terminals
    sandbox = await terminals.sandbox_for(caller, sandbox_id)
    await terminals.resize(sandbox, tid, rows, cols, token=_token(request))
    return Response(status_code=204)


async def _send(request: Request, caller: Principal, sandbox_id: str, tid: str | None) -> Response:
    sig = _signal(_body(await request.body()))
    terminals = request.app.state.deps.terminals
    sandbox = await terminals.sandbox_for(caller, sandbox_id)
    await terminals.signal(sandbox, tid, sig, token=_token(request))
    return Response(status_code=204)


@router.post(
    "/{id}/resize",
    status_code=204,
    response_class=Response,
    responses=_COMMON,
    openapi_extra=_RESIZE,
)
async def resize(id: str, request: Request, caller: Caller) -> Response:
    """Resize the primary terminal."""
    return await _resize(request, caller, id, None)


@router.post(
    "/{id}/signal",
    status_code=204,
    response_class=Response,
    responses=_COMMON,
    openapi_extra=_SIGNAL,
)
async def send_signal(id: str, request: Request, caller: Caller) -> Response:
    """Signal the primary terminal's process group."""
    return await _send(request, caller, id, None)


@router.get("/{id}/terminals", responses=_COMMON)
async def list_terminals(id: str, request: Request, caller: Caller) -> JSONResponse:
    terminals = request.app.state.deps.terminals
    sandbox = await terminals.sandbox_for(caller, id)
    listed = await terminals.list_terminals(sandbox, token=_token(request))
    return JSONResponse({"terminals": listed})


@router.post(
    "/{id}/terminals",
    status_code=201,
    response_model=schemas.TerminalOut,
    responses={**_COMMON, 409: {"model": _E}, 429: {"model": _E, "description": "session-limit"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.TerminalCreate.model_json_schema()}},
        }
    },
)
async def open_terminal(id: str, request: Request, caller: Caller) -> JSONResponse:
    body = _body(await request.body())
    agent = body.get("agent")
    if not isinstance(agent, str) or not agent.strip():
        raise Invalid("agent is required", code="missing-agent")
    terminals = request.app.state.deps.terminals
    sandbox = await terminals.sandbox_for(caller, id)
    _require_ready(sandbox)
    opened = await terminals.open_extra(sandbox, agent, token=_token(request))
    return JSONResponse(opened, status_code=201)


@router.post(
    "/{id}/terminals/{tid}/resize",
    status_code=204,
    response_class=Response,
    responses=_COMMON,
    openapi_extra=_RESIZE,
)
async def resize_terminal(id: str, tid: str, request: Request, caller: Caller) -> Response:
    return await _resize(request, caller, id, tid)


@router.post(
    "/{id}/terminals/{tid}/signal",
    status_code=204,
    response_class=Response,
    responses=_COMMON,
    openapi_extra=_SIGNAL,
)
async def signal_terminal(id: str, tid: str, request: Request, caller: Caller) -> Response:
    return await _send(request, caller, id, tid)


@router.delete("/{id}/terminals/{tid}", status_code=204, response_class=Response, responses=_COMMON)
async def close_terminal(id: str, tid: str, request: Request, caller: Caller) -> Response:
    terminals = request.app.state.deps.terminals
    sandbox = await terminals.sandbox_for(caller, id)
    await terminals.close(sandbox, tid, token=_token(request))
    return Response(status_code=204)


DELETING = "sandbox-deleting"


def _refuse_deleting(sandbox: Sandbox) -> None:
    """No new terminal in a sandbox being deleted: the controller is ending its
    terminals and removing its workspace (issue 11)."""
    if sandbox.deleting:
        raise Conflict(f'sandbox "{sandbox.name}" is being deleted', code=DELETING)


def _require_ready(sandbox: Sandbox) -> None:
    _refuse_deleting(sandbox)
    if sandbox.status.phase != READY:
        raise Invalid(
            f'sandbox "{sandbox.name}" is not ready (phase {sandbox.status.phase or "Pending"})',
            code="sandbox-not-ready",
        )


# ------------------------------------------------------------------ WebSocket
async def _authorized(websocket: WebSocket) -> Principal | None:
    """Accept, then check: a refusal is a close frame with 1008 the client can read,
    not a bare HTTP 403 on the handshake."""
    deps = websocket.app.state.deps
    await websocket.accept()
    if not origin_allowed(websocket, deps.settings.public_url):
        await websocket.close(CLOSE_POLICY, "origin not allowed")
        return None
    try:
        return await principal_from(websocket)
    except SandboxError:
        await websocket.close(CLOSE_POLICY, "unauthenticated")
        return None


async def _wait_ready(websocket: WebSocket, caller: Principal, sandbox_id: str) -> Sandbox | None:
    """Poll until Ready (waking a suspended sandbox once); close with the reason otherwise."""
    terminals = websocket.app.state.deps.terminals
    deadline = time.monotonic() + READY_WAIT
    woken = False
    while True:
        sandbox: Sandbox | None
        try:
            sandbox = await terminals.sandbox_for(caller, sandbox_id)
        except NotFound:
            await websocket.close(CLOSE_POLICY, "sandbox not found")
            return None
        except SandboxError:
            sandbox = None  # store unavailable for a moment: keep waiting
        if sandbox is not None:
            if sandbox.deleting:
                await websocket.close(CLOSE_POLICY, DELETING)
                return None
            phase = sandbox.status.phase
            if phase == READY:
                return sandbox
            if phase == FAILED and agent_unavailable(sandbox.status):
                # not permanent: this attach tries to start the agent again (installed
                # since?) and either serves it or closes 1011 saying why not
                return sandbox
            if phase == FAILED:
                ready = sandbox.status.condition("Ready")
                reason = (ready.message or ready.reason) if ready else "provisioning failed"
                await close_with_message(
                    websocket, code=CLOSE_INTERNAL, message=f"provisioning failed: {reason}"
                )
                return None
            if phase == SUSPENDED and not woken:
                await terminals.wake(sandbox)
                woken = True
        if time.monotonic() >= deadline:
            await websocket.close(CLOSE_TRY_LATER, "sandbox not ready yet")
            return None
        await asyncio.sleep(POLL)


async def _attach(websocket: WebSocket, sandbox_id: str, terminal_id: str | None) -> None:
    caller = await _authorized(websocket)
    if caller is None:
        return
    await _until_token_expires(
        websocket, caller, _serve(websocket, caller, sandbox_id, terminal_id)
    )


async def _serve(
    websocket: WebSocket, caller: Principal, sandbox_id: str, terminal_id: str | None
) -> None:
    sandbox = await _wait_ready(websocket, caller, sandbox_id)
    if sandbox is None:
        return
    terminals = websocket.app.state.deps.terminals
    await terminals.attach(websocket, sandbox, terminal_id, token=_token(websocket))


async def _until_token_expires(
    websocket: WebSocket, caller: Principal, work: Coroutine[Any, Any, None]
) -> None:
    """Run ``work`` until the caller's token expires, then end it and close 1008
    ``token-expired`` (issue 11: ``/logout`` or an expired token must end the session)."""
    left = caller.seconds_left()
    if left is None:
        await work
        return
    task = asyncio.create_task(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=left)
        if task in done:
            task.result()
            return
        log.info("terminal.token_expired", sub=caller.sub)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    with contextlib.suppress(Exception):
        await websocket.close(CLOSE_POLICY, TOKEN_EXPIRED)


@router.websocket("/{id}/attach")
async def attach(websocket: WebSocket, id: str) -> None:
    await _attach(websocket, id, None)


@router.websocket("/{id}/terminals/{tid}/attach")
async def attach_terminal(websocket: WebSocket, id: str, tid: str) -> None:
    await _attach(websocket, id, tid)
