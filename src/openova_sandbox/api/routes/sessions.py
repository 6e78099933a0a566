"""The sessions REST routes of sessions-api.md, check for check in the spec's order."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from ...domain import audit
from ...domain.errors import Invalid
from ...domain.model import Sandbox
from ...domain.principal import Principal
from ...services.sessions import CreateRequest
from .. import schemas
from ..json_body import load_json
from ..security import require_principal
from .usage import session_items

Responses = dict[int | str, dict[str, Any]]
router = APIRouter(prefix="/api/v1/sandbox", tags=["sessions"])

Caller = Annotated[Principal, Depends(require_principal)]

_E = schemas.ErrorBody
_401: Responses = {
    401: {"model": schemas.Unauthenticated, "description": "missing or invalid token"}
}
_503: Responses = {
    503: {
        "model": _E,
        "description": "store unreachable; retry after the Retry-After header (30 s)",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
}
_500: Responses = {
    500: {"model": _E, "description": "unexpected failure (or the store refused us)"}
}
_404: Responses = {404: {"model": _E, "description": "no such sandbox visible to the caller"}}

_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": schemas.CreateBody.model_json_schema()}},
    }
}


@router.get(
    "/sessions",
    name="list_sessions",
    response_model=schemas.SandboxList,
    responses={400: {"model": _E}, **_401, **_500, **_503},
)
async def list_sessions(
    request: Request,
    caller: Caller,
    scope: Annotated[str | None, Query(description="`org`: every sandbox of the org")] = None,
) -> JSONResponse:
    if scope not in (None, "", "org", "own"):
        raise Invalid(f'scope "{scope}" is not one of: org, own', code="invalid-scope")
    sessions = request.app.state.deps.sessions
    items = await sessions.list(caller, org_scope=scope == "org")
    return JSONResponse({"sandboxes": await session_items(request, caller, items)})


def _parse_create_body(raw: bytes) -> CreateRequest:
    if not raw:
        raise Invalid("request body required: {agent, name?, repo?}", code="empty-body")
    body: Any = load_json(raw)
    if not isinstance(body, dict):
        raise Invalid(
            "request body must be a JSON object: {agent, name?, repo?}", code="invalid-json"
        )
    agent = body.get("agent")
    if agent is None or (isinstance(agent, str) and not agent.strip()):
        raise Invalid("agent is required", code="missing-agent")
    if not isinstance(agent, str):
        raise Invalid("agent must be a string", code="invalid-agent")
    fields: dict[str, str | None] = {}
    for key in ("name", "repo"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise Invalid(f"{key} must be a string", code=f"invalid-{key}")
        fields[key] = value
    return CreateRequest(agent=agent, name=fields["name"], repo=fields["repo"])


@router.post(
    "/sessions",
    name="create_session",
    status_code=201,
    response_model=schemas.SandboxItem,
    responses={
        400: {
            "model": _E,
            "description": "empty-body, invalid-json, missing-agent, invalid-agent, "
            "invalid-repo, owner-email-missing, reserved-name, agent-not-installed, "
            "agent-not-configured, repo-unavailable, cross-org-repo",
        },
        **_401,
        409: {"model": _E, "description": "sandbox-already-exists"},
        429: {"model": _E, "description": "quota-exceeded"},
        **_500,
        **_503,
    },
    openapi_extra=_CREATE_BODY,
)
async def create_session(request: Request, caller: Caller) -> JSONResponse:
    raw = await request.body()
    create = _parse_create_body(raw)
    deps = request.app.state.deps
    wanted = f"sandbox/{create.name}" if create.name else "sandbox"
    async with deps.audit.action(
        audit.SANDBOX_CREATE, caller, target=wanted, detail={"agent": create.agent}
    ) as note:
        stored = await deps.sessions.create(caller, create)
        note.target = f"sandbox/{stored.name}"
    _issue_token_soon(deps, stored)
    (item,) = await session_items(request, caller, [stored])
    return JSONResponse(item, status_code=201)


def _issue_token_soon(deps: Any, sandbox: Sandbox) -> None:
    """Embedded mode: the new sandbox's gateway token is issued in the background now,
    while the controller makes its workspace, so the agent's first start does not wait
    for the ledger's write (issue 10). A failure is logged; the spawn tries again."""
    tokens = getattr(getattr(deps, "terminals", None), "tokens", None)
    ensure_soon = getattr(tokens, "ensure_soon", None)
    if callable(ensure_soon):
        ensure_soon(sandbox)


@router.get(
    "/sessions/{id}",
    name="get_session",
    response_model=schemas.SandboxItem,
    responses={**_401, **_404, **_500, **_503},
)
async def get_session(id: str, request: Request, caller: Caller) -> JSONResponse:
    sandbox = await request.app.state.deps.sessions.get(caller, id)
    (item,) = await session_items(request, caller, [sandbox])
    return JSONResponse(item)


@router.delete(
    "/sessions/{id}",
    name="delete_session",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "deleted, or already gone"}, **_401, **_404, **_500, **_503},
)
async def delete_session(id: str, request: Request, caller: Caller) -> Response:
    deps = request.app.state.deps
    async with deps.audit.action(audit.SANDBOX_DELETE, caller, target=f"sandbox/{id}"):
        await deps.sessions.delete(caller, id)
    return Response(status_code=204)
