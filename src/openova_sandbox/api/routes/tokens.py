"""Personal access tokens (docs/api.md, "Personal access tokens"; issue 11).

- ``POST /api/v1/sandbox/tokens`` ``{"name", "expiresInDays"?}`` → 201 with the token,
  shown this once;
- ``GET /api/v1/sandbox/tokens[?scope=org]`` → the caller's tokens (org admins: the
  org's), never the token itself;
- ``DELETE /api/v1/sandbox/tokens/{id}`` → 204; the owner or an org admin of the
  token's org; anyone else's token is 404 ``token-not-found``.

Bad bodies are 400 with a named error (``empty-body``, ``invalid-json``,
``invalid-field``, ``invalid-name``, ``invalid-expiry``); a token cannot create tokens
(403 ``token-not-allowed``); more than a user may hold → 429 ``quota-exceeded``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ...domain import audit
from ...domain.errors import BackendUnavailable, Invalid
from ...domain.principal import Principal
from ...services.tokens import TokensService
from .. import schemas
from ..json_body import load_json
from ..security import require_principal

router = APIRouter(prefix="/api/v1/sandbox", tags=["tokens"])
Caller = Annotated[Principal, Depends(require_principal)]
Responses = dict[int | str, dict[str, Any]]

_E = schemas.ErrorBody
_COMMON: Responses = {
    401: {"model": schemas.Unauthenticated, "description": "missing or invalid token"},
    503: {"model": _E, "description": "the token store is unreachable; retry later"},
}


class TokenCreate(BaseModel):
    name: str = Field(description="a label, like the script's name (1-100 characters)")
    expiresInDays: int | None = Field(
        None, description="default SANDBOX_PAT_DEFAULT_DAYS, at most SANDBOX_PAT_MAX_DAYS"
    )


class TokenOut(BaseModel):
    id: str
    name: str
    owner: str = Field(description="the owner's email (else subject)")
    createdAt: str
    expiresAt: str
    lastUsedAt: str | None = Field(description="recorded at most once a minute")
    expired: bool


class TokenCreated(TokenOut):
    token: str = Field(description="the token (osb_pat_...): shown once, never again")


class TokenList(BaseModel):
    tokens: list[TokenOut]


def tokens_service(request: Request) -> TokensService:
    service: TokensService | None = getattr(request.app.state.deps, "tokens", None)
    if service is None:
        raise BackendUnavailable(
            "personal access tokens are not served by this server", code="tokens-unavailable"
        )
    return service


@router.post(
    "/tokens",
    name="create_token",
    status_code=201,
    response_model=TokenCreated,
    responses={
        400: {
            "model": _E,
            "description": "empty-body, invalid-json, invalid-field, invalid-name, invalid-expiry",
        },
        403: {"model": _E, "description": "token-not-allowed (created with a token)"},
        429: {"model": _E, "description": "quota-exceeded: too many tokens held"},
        **_COMMON,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": TokenCreate.model_json_schema()}},
        }
    },
)
async def create_token(request: Request, caller: Caller) -> JSONResponse:
    """Create a token for scripts: use it as ``Authorization: Bearer``; it is shown once."""
    service = tokens_service(request)
    audit_log = request.app.state.deps.audit
    async with audit_log.action(audit.TOKEN_CREATE, caller, target="token") as note:
        raw = await request.body()
        if not raw:
            raise Invalid(
                'request body required: {"name": "...", "expiresInDays"?: n}', code="empty-body"
            )
        created = await service.create(caller, load_json(raw))
        note.target = f"token/{created['id']}"
        note.detail.update(name=created["name"], expiresAt=created["expiresAt"])
    return JSONResponse(created, status_code=201, headers={"Cache-Control": "no-store"})


@router.get(
    "/tokens",
    name="list_tokens",
    response_model=TokenList,
    responses={
        400: {"model": _E, "description": "invalid-scope"},
        403: {"model": _E, "description": "org-admin-required (scope=org)"},
        **_COMMON,
    },
)
async def list_tokens(
    request: Request,
    caller: Caller,
    scope: Annotated[
        str | None, Query(description="`own` (default); `org`: every token of the org (admins)")
    ] = None,
) -> JSONResponse:
    return JSONResponse(await tokens_service(request).list(caller, scope=scope))


@router.delete(
    "/tokens/{id}",
    name="revoke_token",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "revoked (or already revoked)"},
        404: {"model": _E, "description": "token-not-found"},
        **_COMMON,
    },
)
async def revoke_token(id: str, request: Request, caller: Caller) -> Response:
    service = tokens_service(request)
    target = f"token/{id}"
    async with request.app.state.deps.audit.action(audit.TOKEN_REVOKE, caller, target=target):
        await service.revoke(caller, id)
    return Response(status_code=204)
