"""Terminal endpoints of the control plane: attach (WebSocket), resize, signal, and
extra terminals. Same auth and ownership rules as the REST routes.

Attaching before the sandbox is Ready waits (up to ``READY_WAIT`` seconds, woken by the
sandbox's changes in the resource cache, not by polling the store) and then closes with
1013 "try again later"; a Failed sandbox closes with 1011 and the reason written into
the terminal, except one failed with ``AgentUnavailable``: attaching to it tries to
start the agent again. A bad token or a foreign ``Origin`` closes with 1008.
A connection opened with a token that expires closes with 1008 ``token-expired`` at the
token's ``exp`` (cookie sessions too: the cookie carries a token), waiting or attached.

``?share=<token>``: the caller (a signed-in user of the sandbox's org) attaches through
a share link, in the share's mode; the viewer is closed 1008 ``share-revoked`` or
``share-expired`` when the share ends. Every attach is logged (``terminal.watch``).
A client offering the ``sandbox.v2`` subprotocol is accepted with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from ...auth.oidc_sessions import REASON_SIGNED_OUT
from ...domain import audit
from ...domain.access import OWNER, SHARE
from ...domain.errors import (
    UNSUPPORTED_SIGNAL,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    SandboxError,
)
from ...domain.model import Sandbox, utcnow
from ...domain.principal import Principal
from ...domain.status import FAILED, READY, SUSPENDED, agent_unavailable
from ...domain.terminal_wire import (
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    REASON_ORIGIN,
    REASON_SANDBOX_DELETING,
    REASON_SHARE_EXPIRED,
    REASON_SHARE_REVOKED,
    REASON_TOKEN_EXPIRED,
    REASON_UNAUTHENTICATED,
    SIGNAL_HINT,
    SIGNAL_NAMES,
)
from ...services.quotas import Held, take_slot
from ...services.resources import ResourceEvent, StreamEnd, Subscription
from ...services.shares import SharedAccess
from ...services.terminal_port import Channel, ViewerGrant, refuse
from ...services.tokens import REASON_TOKEN_REVOKED
from .. import schemas
from ..accounts import upstream_token
from ..json_body import load_json
from ..security import origin_allowed, principal_from, require_principal
from ..terminal_edge.attach import log_watch
from ..terminal_edge.channel import WebSocketChannel

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/v1/sandbox/sessions", tags=["terminals"])
Caller = Annotated[Principal, Depends(require_principal)]

READY_WAIT = 30.0
POLL = 0.2  # without an informer (none running): how often to look again
# with one: how often a waiting attach checks its own deadline and that the informer
# is still watching (a quiet wait reads no store while it is, issue 11)
FALLBACK_POLL = 2.0
DELETING = REASON_SANDBOX_DELETING

_E = schemas.ErrorBody
_COMMON: dict[int | str, dict[str, Any]] = {
    400: {"model": _E},
    401: {"model": schemas.Unauthenticated},
    403: {"model": _E, "description": "token-not-allowed (Kubernetes mode, see docs/api.md)"},
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
        raise Invalid(SIGNAL_HINT, code=UNSUPPORTED_SIGNAL)
    return name.strip().upper()


def _token(conn: HTTPConnection) -> str:
    """What a terminal call presents upstream (a personal access token is exchanged for
    a short JWT in Kubernetes mode: ``api.accounts.upstream_token``), with ``org=`` the
    caller's org (the one its token was read for, which the terminal server reads it
    for too)."""
    return upstream_token(conn)


# ------------------------------------------------------------------ REST
async def _resize(
    request: Request, caller: Principal, sandbox_id: str, tid: str | None
) -> Response:
    rows, cols = _size(_body(await request.body()))
    terminals = request.app.state.deps.terminals
    sandbox = await terminals.sandbox_for(caller, sandbox_id)
    await terminals.resize(sandbox, tid, rows, cols, token=_token(request), org=caller.org)
    return Response(status_code=204)


async def _send(request: Request, caller: Principal, sandbox_id: str, tid: str | None) -> Response:
    sig = _signal(_body(await request.body()))
    terminals = request.app.state.deps.terminals
    sandbox = await terminals.sandbox_for(caller, sandbox_id)
    await terminals.signal(sandbox, tid, sig, token=_token(request), org=caller.org)
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
    listed = await terminals.list_terminals(sandbox, token=_token(request), org=caller.org)
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
    opened = await terminals.open_extra(sandbox, agent, token=_token(request), org=caller.org)
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
    deps = request.app.state.deps
    target = f"sandbox/{id}"
    async with deps.audit.action(
        audit.TERMINAL_CLOSE, caller, target=target, detail={"terminal": tid}
    ):
        sandbox = await deps.terminals.sandbox_for(caller, id)
        await deps.terminals.close(sandbox, tid, token=_token(request), org=caller.org)
    return Response(status_code=204)


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
@dataclass(frozen=True)
class _Opened:
    """What an attach found: the sandbox, the viewer's rights, and the share it uses."""

    sandbox: Sandbox
    grant: ViewerGrant
    share: SharedAccess | None = None


class _Refused(Exception):
    def __init__(self, code: int, reason: str, *, written: bool = False) -> None:
        super().__init__(reason)
        self.code, self.reason, self.written = code, reason, written


async def _open(deps: Any, caller: Principal, sandbox_id: str, share: str | None) -> _Opened:
    """The sandbox as the caller may use it: through ``?share=`` (mode from the share)
    or as its owner or an org admin. Raises ``_Refused`` for what waiting cannot fix."""
    who = caller.email or caller.sub
    if share is not None:
        if deps.shares is None:
            raise _Refused(CLOSE_POLICY, REASON_SHARE_REVOKED)
        try:
            access: SharedAccess = await deps.shares.access(caller, sandbox_id, share)
        except NotFound as exc:
            raise _Refused(CLOSE_POLICY, REASON_SHARE_REVOKED) from exc
        except Forbidden as exc:
            raise _Refused(CLOSE_POLICY, REASON_SHARE_EXPIRED) from exc
        grant = ViewerGrant(who=who, mode=access.mode, via=SHARE, share_id=access.share_id)
        return _Opened(access.sandbox, grant, access)
    try:
        sandbox = await deps.terminals.sandbox_for(caller, sandbox_id)
    except NotFound as exc:
        raise _Refused(CLOSE_POLICY, "sandbox not found") from exc
    via = deps.sessions.access_of(caller, sandbox) or OWNER
    return _Opened(sandbox, ViewerGrant(who=who, via=via))


def _ready(opened: _Opened) -> bool:
    """Whether to attach now; raises ``_Refused`` when it never will."""
    sandbox = opened.sandbox
    if sandbox.deleting:
        raise _Refused(CLOSE_POLICY, REASON_SANDBOX_DELETING)
    phase = sandbox.status.phase
    if phase == READY:
        return True
    if phase == FAILED and agent_unavailable(sandbox.status):
        # not permanent: this attach tries to start the agent again (installed since?)
        # and either serves it or closes 1011 saying why not
        return True
    if phase == FAILED:
        ready = sandbox.status.condition("Ready")
        reason = (ready.message or ready.reason) if ready else "provisioning failed"
        raise _Refused(CLOSE_INTERNAL, f"provisioning failed: {reason}", written=True)
    return False


def _changes_of(deps: Any, namespace: str, name: str) -> Subscription | None:
    """A subscription to the sandbox's changes from the informer (the resource cache),
    so a waiting attach wakes the moment it turns Ready; ``None``: none is running."""
    resources = getattr(deps, "resources", None)
    if resources is None:
        return None
    key = (namespace, name)
    sub: Subscription = resources.informer.subscribe(lambda s: (s.namespace, s.name) == key)
    if sub.ended:
        resources.informer.unsubscribe(sub)
        return None
    return sub


def _older(sandbox: Sandbox, than: Sandbox | None) -> bool:
    """Whether ``sandbox`` is an older version than ``than`` (resource versions that
    are counters, as both local stores write them; opaque ones are not compared)."""
    if than is None:
        return False
    mine, theirs = sandbox.metadata.resource_version, than.metadata.resource_version
    return mine.isdigit() and theirs.isdigit() and int(mine) < int(theirs)


def _from_change(
    deps: Any,
    caller: Principal,
    event: ResourceEvent | StreamEnd | None,
    read: Sandbox | None,
) -> _Opened | None:
    """The sandbox as a change event carries it, checked as :func:`_open` checks a read
    (the owner, or an org admin), so the attach need not read the store again.
    ``None``: no object to use (a timeout, the end, a deletion, someone it does not
    admit, or a change older than what the store was ``read`` to be, queued while the
    read ran) - the store decides then."""
    if not isinstance(event, ResourceEvent) or event.type == "DELETED":
        return None
    if _older(event.object, read):
        return None
    via = deps.sessions.access_of(caller, event.object)
    if via is None:
        return None
    return _Opened(event.object, ViewerGrant(who=caller.email or caller.sub, via=via))


def _issue_token_early(deps: Any, sandbox: Sandbox) -> bool:
    """While the attach waits for Ready: have the sandbox's gateway token issued now
    (embedded mode), so the agent's spawn right after Ready finds it there."""
    tokens = getattr(deps.terminals, "tokens", None)
    ensure_soon = getattr(tokens, "ensure_soon", None)
    if callable(ensure_soon):
        ensure_soon(sandbox)
    return True


async def _wait_ready(
    channel: Channel, deps: Any, caller: Principal, sandbox_id: str, share: str | None
) -> _Opened | None:
    """Until Ready (waking a suspended sandbox once), woken by the sandbox's changes
    (polling every ``POLL`` only without an informer); closes with the reason otherwise.

    The owner's (or an admin's) attach subscribes before its one read of the store and
    then takes each change's object as it comes (issue 10: no store read between Ready
    and the spawn); an attach through a share subscribes once it knows the sandbox and
    reads again at each change (the share decides what it may see)."""
    deadline = time.monotonic() + READY_WAIT
    woken = early = False
    sub: Subscription | None = None
    if share is None:
        sub = _changes_of(deps, deps.sessions.namespace_of(caller), sandbox_id)
    changed: _Opened | None = None  # the sandbox as the last change event carried it
    read: Sandbox | None = None  # the sandbox as the store was last read
    waiting: Held | None = None  # the caller's waitingAttaches slot, once it waits
    gone: asyncio.Future[None] | None = None  # ends when the client leaves, while waiting
    try:
        while True:
            opened: _Opened | None = changed
            changed = None
            if opened is None:
                try:
                    opened = await _open(deps, caller, sandbox_id, share)
                except _Refused:
                    raise
                except SandboxError:
                    opened = None  # store unavailable for a moment: keep waiting
                read = opened.sandbox if opened is not None else None
            if opened is not None:
                if _ready(opened):
                    return opened
                if not early:
                    early = _issue_token_early(deps, opened.sandbox)
                if opened.sandbox.status.phase == SUSPENDED and not woken:
                    await deps.terminals.wake(opened.sandbox)
                    woken = True
                if sub is None:
                    sandbox = opened.sandbox
                    sub = _changes_of(deps, sandbox.namespace, sandbox.name)
                    if sub is not None:
                        continue  # look again: a change may have landed before subscribing
            left = deadline - time.monotonic()
            if left <= 0:
                await channel.close(CLOSE_TRY_LATER, "sandbox not ready yet")
                return None
            if waiting is None:  # issue 11: waiting attaches are a quota of their own
                quotas = getattr(deps, "quotas", None)
                waiting = await take_slot(quotas, "waitingAttaches", caller, channel)
                if waiting is None:
                    return None
                gone = _gone_watch(channel)
            if sub is None or sub.ended:
                if not await _unless_gone(gone, asyncio.sleep(min(POLL, left))):
                    return None
            else:
                step = asyncio.ensure_future(sub.next(timeout=min(FALLBACK_POLL, left)))
                if not await _unless_gone(gone, step):
                    return None
                event = step.result()
                if share is None:
                    changed = _from_change(deps, caller, event, read)
                    if event is None and opened is not None and deps.resources.informer.live:
                        # nothing changed and the informer is watching: the sandbox is
                        # as it was (issue 11: 300 waiting attaches each read the store
                        # every 2 s); with the watch down, read it again
                        changed = opened
    except _Refused as refused:
        if refused.written:
            await refuse(channel, refused.code, refused.reason)
        else:
            await channel.close(refused.code, refused.reason)
        return None
    finally:
        if gone is not None:
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gone  # (it reads the channel on ASGI: done before the pump does)
        if waiting is not None:
            waiting.release()
        if sub is not None:
            deps.resources.informer.unsubscribe(sub)


def _gone_watch(channel: Channel) -> asyncio.Future[None] | None:
    """Done when the client leaves (``Channel.wait_gone`` where the channel has one):
    a waiting attach whose client left gives its ``waitingAttaches`` slot back at once,
    not at ``READY_WAIT``."""
    wait_gone = getattr(channel, "wait_gone", None)
    return asyncio.ensure_future(wait_gone()) if callable(wait_gone) else None


async def _unless_gone(gone: asyncio.Future[None] | None, step: Awaitable[object]) -> bool:
    """Await ``step`` unless the client leaves first (then ``step`` is cancelled and
    the answer is ``False``)."""
    if gone is None:
        await step
        return True
    task = asyncio.ensure_future(step)
    await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    log.info("terminal.wait_left", reason="client gone while waiting for Ready")
    return False


async def _authorized(websocket: WebSocket) -> tuple[WebSocketChannel, Principal] | None:
    """Accept, then check: a refusal is a close frame with 1008 the client can read,
    not a bare HTTP 403 on the handshake."""
    deps = websocket.app.state.deps
    channel = await WebSocketChannel.accept(websocket)
    if not origin_allowed(websocket, deps.settings.public_url):
        await channel.close(CLOSE_POLICY, REASON_ORIGIN)
        return None
    try:
        return channel, await principal_from(websocket)
    except SandboxError:
        await channel.close(CLOSE_POLICY, REASON_UNAUTHENTICATED)
        return None


async def _attach(websocket: WebSocket, sandbox_id: str, terminal_id: str | None) -> None:
    authorized = await _authorized(websocket)
    if authorized is None:
        return
    channel, caller = authorized
    # the caller's WebSocket quota (issue 11), held for the connection's life
    quotas = getattr(websocket.app.state.deps, "quotas", None)
    held = await take_slot(quotas, "websockets", caller, channel)
    if held is None:
        return
    with held:
        ends: list[tuple[Awaitable[object], str]] = []
        left = caller.seconds_left()
        if left is not None:
            ends.append((asyncio.sleep(left), REASON_TOKEN_EXPIRED))
        tokens = getattr(websocket.app.state.deps, "tokens", None)
        if caller.via_token and tokens is not None:  # a personal access token's revocation
            ends.append((tokens.wait_revoked(caller.via_token), REASON_TOKEN_REVOKED))
        sessions = getattr(websocket.app.state.deps, "oidc_sessions", None)
        session_id = getattr(websocket.state, "oidc_session", None)
        if sessions is not None and session_id:  # a console session's sign-out (issue 11)
            ends.append((sessions.wait_ended(session_id), REASON_SIGNED_OUT))
        jti = getattr(websocket.state, "token_jti", "")
        if jti:  # a token cookie's sign-out (POST /logout; auth/signouts.py)
            signouts = websocket.app.state.deps.signouts
            ends.append((signouts.wait(caller.sub, jti), REASON_SIGNED_OUT))
        serve = _serve(channel, websocket, caller, sandbox_id, terminal_id)
        await _until_ended(channel, serve, ends, sub=caller.sub)


async def _serve(
    channel: Channel,
    websocket: WebSocket,
    caller: Principal,
    sandbox_id: str,
    terminal_id: str | None,
) -> None:
    deps = websocket.app.state.deps
    opened = await _wait_ready(channel, deps, caller, sandbox_id, channel.query.get("share"))
    if opened is None:
        return
    sandbox, grant = opened.sandbox, opened.grant
    log_watch(caller, sandbox.name, grant, terminal=terminal_id or sandbox.name)
    # recorded in the sandbox's org (its namespace is the org): a share link's viewer
    # may come from another org
    seen: dict[str, Any] = {
        "terminal": terminal_id or sandbox.name,
        "mode": grant.mode,
        "via": grant.via,
    }
    same_org = deps.sessions.namespace_of(caller) == sandbox.namespace
    org = caller.org if same_org else sandbox.namespace
    target = f"sandbox/{sandbox.name}"
    # the attach is recorded while the agent starts, not before (issue 10: the record's
    # write was 3-10 ms between Ready and the spawn); the detach after it, in order
    recorded = asyncio.ensure_future(
        deps.audit.record(audit.TERMINAL_ATTACH, caller, target=target, org=org, detail=dict(seen))
    )
    attached = time.monotonic()
    try:
        await _serve_attached(channel, websocket, deps, opened, terminal_id, caller)
    finally:
        seen["seconds"] = round(time.monotonic() - attached, 1)
        await asyncio.shield(recorded)
        await deps.audit.record(audit.TERMINAL_DETACH, caller, target=target, org=org, detail=seen)


async def _serve_attached(
    channel: Channel,
    websocket: WebSocket,
    deps: Any,
    opened: _Opened,
    terminal_id: str | None,
    caller: Principal,
) -> None:
    sandbox, grant = opened.sandbox, opened.grant
    work = deps.terminals.attach(
        channel, sandbox, terminal_id, token=_token(websocket), grant=grant, org=caller.org
    )
    if opened.share is None:
        await work
        return
    # a share link's viewer ends when the share is revoked or expires
    until_expiry = (opened.share.expires_at - utcnow()).total_seconds()
    ends: list[tuple[Awaitable[object], str]] = [
        (deps.shares.wait_revoked(opened.share.share_id), REASON_SHARE_REVOKED),
        (asyncio.sleep(max(0.0, until_expiry)), REASON_SHARE_EXPIRED),
    ]
    await _until_ended(channel, work, ends, sub=caller.sub)


async def _until_ended(
    channel: Channel,
    work: Coroutine[Any, Any, None],
    ends: list[tuple[Awaitable[object], str]],
    *,
    sub: str,
) -> None:
    """Run ``work`` until one of ``ends`` happens first, then end it and close 1008 with
    that end's reason (issue 11: an expired token ends the session; issue 10: so does a
    revoked or expired share)."""
    if not ends:
        await work
        return
    task = asyncio.create_task(work)
    watchers = {asyncio.ensure_future(end): reason for end, reason in ends}
    reason = ""
    try:
        done, _ = await asyncio.wait({task, *watchers}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
            return
        reason = next(watchers[w] for w in watchers if w in done)
        log.info("terminal.ended", reason=reason, sub=sub)
    finally:
        for pending in (task, *watchers):
            if not pending.done():
                pending.cancel()
        for pending in (task, *watchers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
    await channel.close(CLOSE_POLICY, reason)


@router.websocket("/{id}/attach")
async def attach(websocket: WebSocket, id: str) -> None:
    await _attach(websocket, id, None)


@router.websocket("/{id}/terminals/{tid}/attach")
async def attach_terminal(websocket: WebSocket, id: str, tid: str) -> None:
    await _attach(websocket, id, tid)
