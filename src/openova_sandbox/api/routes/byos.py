"""The Claude Code bring-your-own-subscription routes of sessions-api.md.

Bodies are answered as built by ``ByosService`` (the spec fixes which keys are present);
the models here only describe them for the OpenAPI document. Two routes depart from the
usual ``require_principal`` dependency on purpose: ``status`` answers "disabled" before
the auth check, and ``callback`` is authenticated by its single-use state because the
session cookie is ``SameSite=Strict`` and is not sent on the provider's redirect.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel

from ...domain.errors import Invalid, SandboxError
from ...domain.principal import Principal
from ...services.byos import ByosService
from .. import schemas
from ..json_body import load_json
from ..security import principal_from, require_principal

Responses = dict[int | str, dict[str, Any]]
router = APIRouter(prefix="/api/v1/sandbox/byos/claude-code", tags=["byos"])

Caller = Annotated[Principal, Depends(require_principal)]


class ByosConfig(BaseModel):
    clientIdConfigured: bool
    oauthAuthorizeURL: str | None = None


class ByosStatus(BaseModel):
    connected: bool
    disabled: bool | None = None
    client_id_pending: bool | None = None
    anthropic_account_email: str | None = None
    connected_at: str | None = None
    status: Literal["connected", "disconnected", "pending", "error"] | None = None
    accountLabel: str | None = None
    connectedAt: str | None = None


class ByosStartRequest(BaseModel):
    post_connect_redirect: str | None = None


class ByosStartResponse(BaseModel):
    authorization_url: str
    authorizeUrl: str
    state: str


_E = schemas.ErrorBody
_401: Responses = {
    401: {"model": schemas.Unauthenticated, "description": "missing or invalid token"}
}
_403: Responses = {
    403: {"model": _E, "description": '`{"error":"byos disabled by operator policy"}`'}
}
_503: Responses = {
    503: {
        "model": _E,
        "description": "byos-operator-setup-pending: client id or provider URLs not set",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
}
_START_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": ByosStartRequest.model_json_schema()}},
    }
}


def _byos(request: Request) -> ByosService:
    service: ByosService = request.app.state.deps.byos
    return service


@router.get(
    "/config",
    name="byos_config",
    operation_id="byosConfig",
    response_model=ByosConfig,
    responses={**_401},
)
async def byos_config(request: Request, caller: Caller) -> JSONResponse:
    return JSONResponse(_byos(request).config())


@router.get(
    "/status",
    name="byos_status",
    operation_id="byosStatus",
    response_model=ByosStatus,
    responses={**_401},
)
async def byos_status(request: Request) -> JSONResponse:
    """Disabled by the operator → answered without authentication (spec)."""
    service = _byos(request)
    if not service.enabled:
        return JSONResponse(service.disabled_status())
    caller = await principal_from(request)
    return JSONResponse(service.status(caller.sub))


def _parse_start_body(raw: bytes) -> object:
    if not raw.strip():
        return None
    body: Any = load_json(raw)
    if not isinstance(body, dict):
        raise Invalid(
            "request body must be a JSON object: {post_connect_redirect?}", code="invalid-json"
        )
    return body.get("post_connect_redirect")


async def _start(request: Request, caller: Principal) -> JSONResponse:
    service = _byos(request)
    service.ensure_usable()
    redirect = _parse_start_body(await request.body())
    started = service.start(
        sub=caller.sub, base_url=str(request.base_url), post_connect_redirect=redirect
    )
    return JSONResponse(started)


_START_RESPONSES: Responses = {
    400: {"model": _E, "description": "invalid-json or invalid-redirect"},
    **_401,
    **_403,
    **_503,
}


@router.post(
    "/start",
    name="byos_start",
    operation_id="byosStart",
    response_model=ByosStartResponse,
    responses=_START_RESPONSES,
    openapi_extra=_START_BODY,
)
async def byos_start(request: Request, caller: Caller) -> JSONResponse:
    """Begin an authorization-code + PKCE (S256) flow; the state lives 10 minutes."""
    return await _start(request, caller)


@router.post(
    "/connect",
    name="byos_connect",
    operation_id="byosConnect",
    response_model=ByosStartResponse,
    responses=_START_RESPONSES,
    openapi_extra=_START_BODY,
)
async def byos_connect(request: Request, caller: Caller) -> JSONResponse:
    """Alias of `POST /start`."""
    return await _start(request, caller)


@router.get(
    "/callback",
    name="byos_callback",
    operation_id="byosCallback",
    status_code=302,
    response_class=RedirectResponse,
    responses={
        302: {
            "description": "to the saved redirect, or `/sandbox?byos=error&reason=...`",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        400: {"model": _E, "description": "missing-code, missing-state or invalid-state"},
        403: {"model": _E, "description": "byos disabled, or the state is another user's"},
        **_503,
    },
)
async def byos_callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=256)] = None,
    error: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """The provider's redirect target. Authenticated by the single-use state issued to
    the user who started the flow; credentials, when present, must be that user's."""
    caller_sub: str | None = None
    try:
        caller_sub = (await principal_from(request)).sub
    except SandboxError:
        caller_sub = None
    location = await _byos(request).finish(
        code=code, state=state, error=error, caller_sub=caller_sub
    )
    return RedirectResponse(location, status_code=302)


_DELETE_RESPONSES: Responses = {
    204: {"description": "disconnected (also when nothing was connected)"},
    **_401,
    **_403,
}


@router.delete(
    "",
    name="byos_disconnect",
    operation_id="byosDisconnect",
    status_code=204,
    response_class=Response,
    responses=_DELETE_RESPONSES,
)
async def byos_disconnect(request: Request, caller: Caller) -> Response:
    await _byos(request).disconnect(caller.sub)
    return Response(status_code=204)


@router.delete(
    "/disconnect",
    name="byos_disconnect_alias",
    operation_id="byosDisconnectAlias",
    status_code=204,
    response_class=Response,
    responses=_DELETE_RESPONSES,
)
async def byos_disconnect_alias(request: Request, caller: Caller) -> Response:
    """Alias of `DELETE /byos/claude-code`."""
    await _byos(request).disconnect(caller.sub)
    return Response(status_code=204)
