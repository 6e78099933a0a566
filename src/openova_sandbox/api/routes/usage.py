"""Model usage and budgets (docs/gateway.md, "Usage and budgets").

- ``GET /api/v1/sandbox/usage?scope=own|org&groupBy=sandbox|user|model&since=``
- ``GET /api/v1/sandbox/budgets``, ``GET|PUT|DELETE /api/v1/sandbox/budgets/{scope}/{name}``

Every bad query parameter or body is a 400 with a named error (``invalid-scope``,
``invalid-group-by``, ``invalid-since``, ``invalid-name``, ``invalid-budget``,
``empty-body``, ``invalid-json``); org-wide reads and every budget change are for org
admins (403 ``org-admin-required``), and only within the caller's org (403
``other-org``). Without a ledger (a server built without the gateway) the routes answer
503 ``usage-unavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ...domain import audit
from ...domain.errors import BackendUnavailable, Invalid
from ...domain.ledger import parse_budget
from ...domain.model import Sandbox
from ...domain.principal import Principal
from ...domain.status import to_item
from ...services.usage import UsageService
from .. import schemas
from ..json_body import load_json
from ..security import require_principal

Responses = dict[int | str, dict[str, Any]]
router = APIRouter(prefix="/api/v1/sandbox", tags=["usage"])
Caller = Annotated[Principal, Depends(require_principal)]

_E = schemas.ErrorBody
_COMMON: Responses = {
    401: {"model": schemas.Unauthenticated, "description": "missing or invalid token"},
    503: {"model": _E, "description": "the ledger's database is unreachable; retry later"},
}
_BUDGET_ERRORS: Responses = {
    400: {"model": _E, "description": "invalid-scope, invalid-name"},
    403: {"model": _E, "description": "org-admin-required, other-org"},
    404: {"model": _E, "description": "sandbox-not-found"},
    **_COMMON,
}
_PUT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": schemas.BudgetBody.model_json_schema()}},
    }
}


def usage_service(request: Request) -> UsageService:
    deps = request.app.state.deps
    ledger = getattr(deps, "ledger", None)
    if ledger is None:
        raise BackendUnavailable(
            "model usage is not recorded by this server (no gateway ledger)",
            code="usage-unavailable",
        )
    service: UsageService | None = getattr(request.app.state, "usage", None)
    if service is None or service.ledger is not ledger:
        service = UsageService(ledger=ledger, sessions=deps.sessions)
        request.app.state.usage = service
    return service


async def session_items(
    request: Request, caller: Principal, sandboxes: Sequence[Sandbox]
) -> list[dict[str, Any]]:
    """Session items with ``usage30d``/``spend30d`` when the server keeps a ledger (and
    it answers); as before otherwise."""
    if getattr(request.app.state.deps, "ledger", None) is None:
        return _with_activity(request, sandboxes, [to_item(s) for s in sandboxes])
    usage = await usage_service(request).sandbox_usage(caller, sandboxes)
    if usage is None:
        return _with_activity(request, sandboxes, [to_item(s) for s in sandboxes])
    return _with_activity(request, sandboxes, [to_item(s, usage.get(s.name)) for s in sandboxes])


def _with_activity(
    request: Request, sandboxes: Sequence[Sandbox], items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``activity`` of each running primary terminal, where this process runs them
    (embedded mode; the Kubernetes control plane does not hold the terminals)."""
    activity = getattr(getattr(request.app.state.deps, "terminals", None), "activity", None)
    if callable(activity):
        for sandbox, item in zip(sandboxes, items, strict=True):
            state = activity(sandbox.namespace, sandbox.name)
            if isinstance(state, str):
                item["activity"] = state
    return items


@router.get(
    "/usage",
    name="get_usage",
    response_model=schemas.UsageReportOut,
    responses={
        400: {"model": _E, "description": "invalid-scope, invalid-group-by, invalid-since"},
        403: {"model": _E, "description": "org-admin-required (scope=org)"},
        **_COMMON,
    },
)
async def get_usage(
    request: Request,
    caller: Caller,
    scope: Annotated[
        str | None, Query(description="`own` (default): your sandboxes; `org`: org admins")
    ] = None,
    group_by: Annotated[
        str | None, Query(alias="groupBy", description="`sandbox`, `user` or `model`")
    ] = None,
    since: Annotated[
        str | None,
        Query(description="a date (UTC) or RFC 3339 time; default: 30 days including today"),
    ] = None,
) -> JSONResponse:
    service = usage_service(request)
    report = await service.report(caller, scope=scope, group_by=group_by, since=since)
    return JSONResponse(report)


@router.get(
    "/budgets",
    name="list_budgets",
    response_model=schemas.BudgetList,
    responses=_COMMON,
)
async def list_budgets(request: Request, caller: Caller) -> JSONResponse:
    """Org admins: the org's budget and every one set in the org. Others: the org's,
    their own and their sandboxes'."""
    return JSONResponse(await usage_service(request).list_budgets(caller))


@router.get(
    "/budgets/{scope}/{name}",
    name="get_budget",
    response_model=schemas.BudgetOut,
    responses=_BUDGET_ERRORS,
)
async def get_budget(scope: str, name: str, request: Request, caller: Caller) -> JSONResponse:
    return JSONResponse(await usage_service(request).get_budget(caller, scope, name))


def _parse_budget_body(raw: bytes) -> Any:
    if not raw:
        raise Invalid('request body required: {"monthlyUsd": <USD> | null}', code="empty-body")
    body: Any = load_json(raw)
    if not isinstance(body, dict) or "monthlyUsd" not in body:
        raise Invalid(
            'request body must be a JSON object {"monthlyUsd": <USD> | null}',
            code="invalid-budget",
        )
    return parse_budget(body["monthlyUsd"])


@router.put(
    "/budgets/{scope}/{name}",
    name="put_budget",
    response_model=schemas.BudgetOut,
    responses={
        **_BUDGET_ERRORS,
        400: {
            "model": _E,
            "description": "invalid-scope, invalid-name, empty-body, invalid-json, invalid-budget",
        },
    },
    openapi_extra=_PUT_BODY,
)
async def put_budget(scope: str, name: str, request: Request, caller: Caller) -> JSONResponse:
    """Org admins: set the monthly budget (USD; ``null``: no cap) of the org, a user
    (by email) or a sandbox of the org; it overrides the operator's default."""
    service = usage_service(request)
    audit_log = request.app.state.deps.audit
    async with audit_log.action(audit.BUDGET_SET, caller, target=f"budget/{scope}/{name}") as note:
        key = service.changeable(caller, scope, name)
        note.target = f"budget/{key.scope}/{key.name}"
        limit = _parse_budget_body(await request.body())
        note.detail["limitUsd"] = None if limit is None else str(limit)
        body = await service.set_budget(caller, key, limit)
    return JSONResponse(body)


@router.delete(
    "/budgets/{scope}/{name}",
    name="delete_budget",
    response_model=schemas.BudgetOut,
    responses=_BUDGET_ERRORS,
)
async def delete_budget(scope: str, name: str, request: Request, caller: Caller) -> JSONResponse:
    """Org admins: back to the operator's default; answers the budget as it now stands."""
    service = usage_service(request)
    audit_log = request.app.state.deps.audit
    target = f"budget/{scope}/{name}"
    async with audit_log.action(audit.BUDGET_CLEAR, caller, target=target) as note:
        key = service.changeable(caller, scope, name)
        note.target = f"budget/{key.scope}/{key.name}"
        body = await service.clear_budget(caller, key)
    return JSONResponse(body)
