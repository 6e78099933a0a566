"""Share links of a sandbox (docs/shares.md): create, list and revoke them (owner or org
admin), and what a link opens (any signed-in user of the sandbox's org holding it).

The token is in the create answer only; listings never carry it, and the server keeps
nothing but its SHA-256.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from ...domain import audit
from ...domain.errors import Invalid, NotFound
from ...domain.model import ANNOTATION_DISPLAY_NAME, format_time
from ...domain.principal import Principal
from ...domain.share import ShareRequest, parse_request
from ...services.shares import SharesService
from .. import schemas
from ..json_body import load_json
from ..security import require_principal

router = APIRouter(prefix="/api/v1/sandbox", tags=["shares"])
Caller = Annotated[Principal, Depends(require_principal)]

Responses = dict[int | str, dict[str, Any]]
_E = schemas.ErrorBody
_COMMON: Responses = {
    401: {"model": schemas.Unauthenticated, "description": "missing or invalid token"},
    404: {"model": _E, "description": "no such sandbox visible to the caller"},
    500: {"model": _E},
    503: {"model": _E, "description": "store unreachable; retry after Retry-After"},
}
_CREATE_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": schemas.ShareCreateBody.model_json_schema()}},
    }
}
NO_STORE = {"Cache-Control": "no-store"}


def _shares(request: Request) -> SharesService:
    service: SharesService | None = request.app.state.deps.shares
    if service is None:
        raise NotFound("share links are not served by this server", code="not-found")
    return service


def _parse_body(raw: bytes) -> ShareRequest:
    """An empty body takes the defaults (read, 1 hour); unknown fields are ignored."""
    if not raw.strip():
        return ShareRequest()
    body: Any = load_json(raw)
    if not isinstance(body, dict):
        raise Invalid(
            'request body must be a JSON object: {"mode"?: "read"|"write", "ttlSeconds"?: int}',
            code="invalid-json",
        )
    return parse_request(body)


def share_url(request: Request, sandbox_id: str, token: str) -> str:
    base = request.app.state.deps.settings.public_url.strip() or str(request.base_url)
    return f"{base.rstrip('/')}/sandbox/{quote(sandbox_id, safe='')}?share={token}"


@router.post(
    "/sessions/{id}/shares",
    name="create_share",
    status_code=201,
    response_model=schemas.ShareCreated,
    responses={
        400: {"model": _E, "description": "invalid-json, invalid-mode, invalid-ttl"},
        **_COMMON,
        409: {"model": _E, "description": "share-limit (20 live shares), sandbox-deleting"},
    },
    openapi_extra=_CREATE_BODY,
)
async def create_share(id: str, request: Request, caller: Caller) -> JSONResponse:
    wanted = _parse_body(await request.body())
    async with request.app.state.deps.audit.action(
        audit.SHARE_CREATE, caller, target=f"sandbox/{id}"
    ) as note:
        created = await _shares(request).create(caller, id, wanted)
        note.detail.update(share=created.share.id, mode=created.share.mode)
    body = {
        **created.share.to_item(),
        "token": created.token,
        "url": share_url(request, id, created.token),
    }
    return JSONResponse(body, status_code=201, headers=NO_STORE)


@router.get(
    "/sessions/{id}/shares",
    name="list_shares",
    response_model=schemas.ShareList,
    responses=_COMMON,
)
async def list_shares(id: str, request: Request, caller: Caller) -> JSONResponse:
    shares = await _shares(request).list(caller, id)
    return JSONResponse({"shares": [s.to_item() for s in shares]}, headers=NO_STORE)


@router.delete(
    "/sessions/{id}/shares/{shareId}",
    name="revoke_share",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "revoked; its viewers are disconnected"},
        **_COMMON,
        404: {"model": _E, "description": "sandbox-not-found, share-not-found"},
    },
)
async def revoke_share(id: str, shareId: str, request: Request, caller: Caller) -> Response:
    async with request.app.state.deps.audit.action(
        audit.SHARE_REVOKE, caller, target=f"sandbox/{id}", detail={"share": shareId}
    ):
        await _shares(request).revoke(caller, id, shareId)
    return Response(status_code=204)


@router.get(
    "/shared/{id}",
    name="get_shared",
    response_model=schemas.SharedSandbox,
    responses={
        400: {"model": _E, "description": "missing-share: no share token given"},
        **_COMMON,
        403: {"model": _E, "description": "share-expired"},
        404: {"model": _E, "description": "share-not-found (revoked, unknown, other org)"},
    },
)
async def get_shared(
    id: str,
    request: Request,
    caller: Caller,
    share: Annotated[str, Query(description="the share link's token")] = "",
) -> JSONResponse:
    if not share:
        raise Invalid("the share link's token is missing: ?share=<token>", code="missing-share")
    access = await _shares(request).access(caller, id, share)
    sandbox = access.sandbox
    body = {
        "id": sandbox.name,
        "name": sandbox.metadata.annotations.get(ANNOTATION_DISPLAY_NAME) or sandbox.name,
        "agent": sandbox.spec.default_agent,
        "owner": sandbox.spec.owner_email,
        "mode": access.mode,
        "expiresAt": format_time(access.expires_at),
    }
    return JSONResponse(body, headers=NO_STORE)
