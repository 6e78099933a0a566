"""Quotas per user and org (docs/api.md, "Quotas"; issue 11).

- ``GET /api/v1/sandbox/quotas`` → the caller's effective limits (user and org) and
  what is in use now;
- ``GET /api/v1/sandbox/quotas/{scope}/{name}`` → one scope's limits (``org``: the
  caller's org; ``user``: a user of it by email - org admins, or the user);
- ``PUT /api/v1/sandbox/quotas/{scope}/{name}`` ``{"sandboxes"?: n|null, "terminals"?,
  "websockets"?, "waitingAttaches"?}`` → org admins set (``null``: back to the default)
  and get the result.

Every bad parameter or body is a 400 with a named error (``invalid-scope``,
``invalid-name``, ``empty-body``, ``invalid-json``, ``invalid-quota``); changes are for
org admins (403 ``org-admin-required``) and only within their org (403 ``other-org``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ...domain import audit
from ...domain.errors import BackendUnavailable, Invalid
from ...domain.principal import Principal
from ...services.quotas import QuotasService
from .. import schemas
from ..json_body import load_json
from ..security import require_principal

router = APIRouter(prefix="/api/v1/sandbox", tags=["quotas"])
Caller = Annotated[Principal, Depends(require_principal)]
Responses = dict[int | str, dict[str, Any]]

_E = schemas.ErrorBody
_COMMON: Responses = {
    401: {"model": schemas.Unauthenticated, "description": "missing or invalid token"},
    503: {"model": _E, "description": "the quota store is unreachable; retry later"},
}
_KEY_ERRORS: Responses = {
    400: {"model": _E, "description": "invalid-scope, invalid-name"},
    403: {"model": _E, "description": "org-admin-required, other-org"},
    **_COMMON,
}


class QuotaValues(BaseModel):
    sandboxes: int | None = None
    terminals: int | None = None
    websockets: int | None = None
    waitingAttaches: int | None = None


class QuotaOut(BaseModel):
    scope: str = Field(pattern="^(org|user)$")
    name: str
    limits: QuotaValues = Field(description="in force (null: no limit)")
    defaults: QuotaValues = Field(description="the operator's (SANDBOX_QUOTA_ORG/USER)")
    overrides: QuotaValues = Field(description="set by org admins (absent: the default)")
    updatedAt: str | None = None
    updatedBy: str | None = None


class QuotaScopeUsage(BaseModel):
    name: str
    limits: QuotaValues
    usage: QuotaValues = Field(description="in use now (null: not counted by this server)")


class EffectiveQuotas(BaseModel):
    user: QuotaScopeUsage
    org: QuotaScopeUsage


def quotas_service(request: Request) -> QuotasService:
    service: QuotasService | None = getattr(request.app.state.deps, "quotas", None)
    if service is None:
        raise BackendUnavailable("quotas are not kept by this server", code="quotas-unavailable")
    return service


@router.get(
    "/quotas", name="get_effective_quotas", response_model=EffectiveQuotas, responses=_COMMON
)
async def get_effective_quotas(request: Request, caller: Caller) -> JSONResponse:
    """Your limits and usage: your own and your org's (both must admit one more)."""
    return JSONResponse(await quotas_service(request).effective(caller))


@router.get(
    "/quotas/{scope}/{name}", name="get_quotas", response_model=QuotaOut, responses=_KEY_ERRORS
)
async def get_quotas(scope: str, name: str, request: Request, caller: Caller) -> JSONResponse:
    return JSONResponse(await quotas_service(request).get(caller, scope, name))


@router.put(
    "/quotas/{scope}/{name}",
    name="put_quotas",
    response_model=QuotaOut,
    responses={
        **_KEY_ERRORS,
        400: {
            "model": _E,
            "description": "invalid-scope, invalid-name, empty-body, invalid-json, invalid-quota",
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": QuotaValues.model_json_schema()}},
        }
    },
)
async def put_quotas(scope: str, name: str, request: Request, caller: Caller) -> JSONResponse:
    """Org admins: set quotas of the org or of one of its users (by email); ``null``
    returns a quota to the operator's default. At most the operator's org limit."""
    service = quotas_service(request)
    audit_log = request.app.state.deps.audit
    async with audit_log.action(audit.QUOTA_SET, caller, target=f"quota/{scope}/{name}") as note:
        key = service.changeable(caller, scope, name)
        note.target = f"quota/{key.scope}/{key.name}"
        raw = await request.body()
        if not raw:
            raise Invalid('request body required: {"sandboxes": 10, ...}', code="empty-body")
        body = load_json(raw)
        answer = await service.put(caller, key, body)
        note.detail.update({k: v for k, v in body.items()})  # what was set (null: default)
    return JSONResponse(answer)
