"""The MCP server as its own app (``sandbox mcp --http``; Kubernetes: its own
Deployment beside the API, deploy/kubernetes/mcp.yaml).

Only ``/mcp`` plus ``/healthz``, ``/readyz`` and ``/metrics``, on the control plane
``api.composition.build_api`` assembles (store, resource cache, ledger, audit log): the
tools act through the same services as the API's routes, and every replica reads the
same store, so a token is revoked everywhere when its sandbox is deleted.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Route

from .. import __version__
from . import errors
from .app import deps_lifespan
from .deps import AppDeps
from .metrics import HttpMetrics, ObservabilityMiddleware
from .routes import system


def create_mcp_app(deps: AppDeps) -> FastAPI:
    """``deps`` must carry the MCP server (``deps.mcp``, ``composition.attach_mcp``)."""
    if deps.mcp is None:
        raise ValueError("create_mcp_app needs deps.mcp (composition.attach_mcp)")

    lifespan = deps_lifespan(deps, started_hooks=False)

    app = FastAPI(
        title="OpenOva Sandbox MCP",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.deps = deps
    app.state.shutdown_hooks = [deps.mcp.end_streams]
    if deps.resources is not None:
        app.state.shutdown_hooks.append(deps.resources.end_streams)
    errors.install(app)
    app.add_middleware(ObservabilityMiddleware, metrics=HttpMetrics(deps.metrics_registry))
    app.include_router(system.router)
    app.router.routes.append(Route("/mcp", endpoint=deps.mcp.http))
    return app
