"""The agent catalogue as the console sees it, and installing agents from the console.

``GET /agents``: every row the API offers (the agents and the Shell), whether and where
its binary is found (the managed ``<data-dir>/agents/bin`` first, then the server's
PATH), what it reports as its version, what is missing to start it, and whether the
caller may install it. Installs (org admins; the local operator's login link is one)
run in the background of the server process; the console polls their progress.
In Kubernetes mode the sandbox image carries the agents: nothing is installable here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from ...agents.installer import check_version
from ...agents.status import AgentStatus, agent_statuses
from ...domain.catalogue import AgentSpec, Catalogue
from ...domain.errors import Forbidden, Invalid, NotFound
from ...domain.principal import Principal
from ...services.agent_installs import IDLE, AgentInstalls, InstallJob
from .. import schemas
from ..json_body import load_json
from ..security import require_principal

Responses = dict[int | str, dict[str, Any]]
router = APIRouter(prefix="/api/v1/sandbox", tags=["agents"])
Caller = Annotated[Principal, Depends(require_principal)]

_E = schemas.ErrorBody
_401: Responses = {401: {"model": schemas.Unauthenticated, "description": "no valid token"}}
_403: Responses = {403: {"model": _E, "description": "forbidden: only org admins install"}}
_404: Responses = {404: {"model": _E, "description": "agent-not-found"}}
_409: Responses = {409: {"model": _E, "description": "install-running"}}
BYOS_AGENT = "claude-code"
KUBE_MODE = (
    "in Kubernetes mode the sandbox image carries the agents; add it to the image "
    "(and to SANDBOX_IMAGE_AGENTS)"
)


def _installs(request: Request) -> AgentInstalls | None:
    installs: AgentInstalls | None = getattr(request.app.state.deps, "agent_installs", None)
    return installs


def _job_out(job: InstallJob | None) -> dict[str, Any] | None:
    if job is None:
        return None
    return {"state": job.state, "log": job.log, "error": job.error}


def _agent_out(
    request: Request, caller: Principal, status: AgentStatus, local: bool
) -> dict[str, Any]:
    deps = request.app.state.deps
    spec = status.spec
    installs = _installs(request)
    if local:
        installed, path, source = status.installed, status.located.path, status.located.source
        binary_missing = [] if installed else [f"binary {spec.binary}"]
    else:  # Kubernetes: what the sandbox image carries, as create checks it
        why = deps.sessions.not_installed(spec)
        installed, path, source = not why, None, spec.source
        binary_missing = [f"binary {spec.binary}"] if why else []
    missing = [*binary_missing, *deps.sessions.missing_env(spec, caller)]
    installable = local and status.installable
    return {
        "id": spec.slug,
        "label": spec.label or spec.slug,
        "blurb": spec.blurb or spec.notes,
        "installed": installed,
        "installHint": spec.install_hint,
        "byos": spec.slug == BYOS_AGENT,
        "kind": status.kind,
        "version": status.version if local else None,
        "source": source,
        "path": path,
        "missing": missing,
        "installable": installable,
        "manualInstall": status.manual_install if local else (spec.manual_install or None),
        "canInstall": installable and caller.is_org_admin,
        "install": _job_out(installs.job(spec.slug) if installs else None),
    }


@router.get(
    "/agents",
    response_model=schemas.AgentList,
    responses=_401,
)
async def list_agents(request: Request, caller: Caller) -> JSONResponse:
    """The API's agents (and the Shell) with where they are installed and what is
    missing; ``canInstall`` says whether this caller may install one from here."""
    deps = request.app.state.deps
    catalogue = deps.sessions.catalogue
    specs: list[AgentSpec] = [a for s in catalogue.api_slugs if (a := catalogue.get(s))]
    installs = _installs(request)
    local = installs is not None
    statuses = await asyncio.to_thread(
        agent_statuses,
        specs,
        Path(deps.settings.data_dir),
        env=deps.agent_env or {},
        server_path=installs.server_path if installs else None,
        probe=local,
    )
    return JSONResponse({"agents": [_agent_out(request, caller, s, local) for s in statuses]})


def _admin(caller: Principal) -> None:
    if not caller.is_org_admin:
        raise Forbidden(
            "only org admins (or the local operator) install agents; ask your operator",
            code="forbidden",
        )


def _known(request: Request, slug: str) -> AgentSpec:
    catalogue: Catalogue = request.app.state.deps.sessions.catalogue
    spec = catalogue.get(slug)
    if spec is None or not spec.offered_by_api:
        raise NotFound(
            f"no agent {slug!r}; known agents: {', '.join(catalogue.api_slugs)}",
            code="agent-not-found",
        )
    return spec


def _parse_install_body(raw: bytes) -> str | None:
    if not raw.strip():
        return None
    body: Any = load_json(raw)
    if not isinstance(body, dict):
        raise Invalid('the body must be a JSON object: {"version"?: "1.2.3"}', code="invalid-json")
    version = body.get("version")
    if version is None:
        return None
    if not isinstance(version, str):
        raise Invalid("version must be a string, e.g. 1.18.33", code="invalid-version")
    return check_version(version.strip())


@router.post(
    "/agents/{slug}/install",
    status_code=202,
    response_model=schemas.AgentInstallStarted,
    responses={
        400: {
            "model": _E,
            "description": "agent-not-installable (detail: how to install it by hand), "
            "invalid-json, invalid-version",
        },
        **_401,
        **_403,
        **_404,
        **_409,
    },
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": schemas.AgentInstallBody.model_json_schema()}
            },
        }
    },
)
async def install_agent(slug: str, request: Request, caller: Caller) -> JSONResponse:
    """Start installing the agent (its pinned version, or ``version``) in the background;
    poll ``GET …/install`` for its progress."""
    _admin(caller)
    spec = _known(request, slug)
    version = _parse_install_body(await request.body())
    installs = _installs(request)
    if installs is None:
        raise Invalid(KUBE_MODE, code="agent-not-installable")
    job = installs.begin(spec.slug, version)
    return JSONResponse({"slug": job.slug, "state": job.state}, status_code=202)


@router.get(
    "/agents/{slug}/install",
    response_model=schemas.AgentInstallProgress,
    responses={**_401, **_404},
)
async def install_progress(slug: str, request: Request, caller: Caller) -> JSONResponse:
    """The latest install of the agent started here: its state, log lines and outcome
    (``idle``: none since the server started)."""
    spec = _known(request, slug)
    installs = _installs(request)
    job = installs.job(spec.slug) if installs else None
    if job is None:
        return JSONResponse(
            {"slug": spec.slug, "state": IDLE, "log": [], "error": None, "version": None}
        )
    return JSONResponse(
        {
            "slug": job.slug,
            "state": job.state,
            "log": job.log,
            "error": job.error,
            "version": job.version,
        }
    )


@router.delete(
    "/agents/{slug}",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "the managed install is removed (or there was none)"},
        **_401,
        **_403,
        **_404,
        **_409,
    },
)
async def remove_agent(slug: str, request: Request, caller: Caller) -> Response:
    """Remove the server's own install of the agent (one on the server's PATH stays)."""
    _admin(caller)
    spec = _known(request, slug)
    installs = _installs(request)
    if installs is not None:
        await installs.remove(spec.slug)
    return Response(status_code=204)
