"""The ASGI application factory.

``create_app`` takes assembled dependencies (see ``composition`` for the embedded set)
and adds routes, the error mapping and observability. Start-up opens the store (which
applies migrations) and then the background parts (controller, terminals); shutdown
runs the reverse, so no request is served by a half-built app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.routing import Route

from .. import __version__
from ..domain.errors import BackendUnavailable
from . import errors
from .audit_client import AuditClientMiddleware
from .body_limit import BodyLimitMiddleware
from .deps import AppDeps
from .frame_guard import FrameGuardMiddleware
from .metrics import HttpMetrics, ObservabilityMiddleware
from .preflight import PreflightMiddleware
from .routes import (
    agents,
    audit,
    byos,
    console,
    identity,
    llm,
    oidc,
    preview,
    quotas,
    resources,
    sessions,
    shares,
    system,
    terminals,
    tokens,
    usage,
)

log = structlog.get_logger(__name__)


def deps_lifespan(
    deps: AppDeps, *, started_hooks: bool = True
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """An app's lifespan over ``deps``: the store opened (or retried in the background),
    the background parts started in order (then ``deps.on_started`` unless
    ``started_hooks`` is False), and on the way out stopped in reverse, the store last."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        retry = await _start_store(deps)
        started = []
        try:
            for part in deps.background:
                await part.start()
                started.append(part)
            if started_hooks:
                for hook in deps.on_started:
                    await hook()
            yield
        finally:
            for part in reversed(started):
                try:
                    await part.stop()
                except Exception:
                    log.exception("background part failed to stop", part=type(part).__name__)
            if retry is not None:
                retry.cancel()
            await deps.store.close()

    return lifespan


def create_app(deps: AppDeps) -> FastAPI:
    lifespan = deps_lifespan(deps)
    app = FastAPI(
        title="OpenOva Sandbox",
        version=__version__,
        description="Sessions API of OpenOva Sandbox: server-side coding-agent sandboxes.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.deps = deps
    # run when the server starts shutting down, before it waits for open responses
    app.state.shutdown_hooks = [deps.resources.end_streams] if deps.resources else []
    if deps.mcp is not None:
        # /mcp: the sandboxes' agents, each with its sandbox's MCP token (docs/mcp.md)
        app.router.routes.append(Route("/mcp", endpoint=deps.mcp.http))
        app.state.shutdown_hooks.append(deps.mcp.end_streams)
    errors.install(app)
    app.add_middleware(PreflightMiddleware)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(FrameGuardMiddleware)
    app.add_middleware(AuditClientMiddleware)
    if deps.gateway is not None:
        # /llm/ is served here, ahead of the router and the body cap (it bounds its own
        # bodies: prompts carry images), inside the request ids, access log and metrics
        app.add_middleware(llm.LlmMiddleware, gateway=deps.gateway)
    app.add_middleware(ObservabilityMiddleware, metrics=HttpMetrics(deps.metrics_registry))
    app.include_router(system.router)
    app.include_router(identity.router)
    app.include_router(oidc.router)
    app.include_router(agents.router)
    app.include_router(sessions.router)
    app.include_router(shares.router)
    app.include_router(byos.router)
    app.include_router(terminals.router)
    app.include_router(resources.router)
    app.include_router(usage.router)
    app.include_router(tokens.router)
    app.include_router(quotas.router)
    app.include_router(audit.router)
    app.include_router(preview.router)  # /preview/<sandbox>/<port>/ (embedded previews)
    app.include_router(console.router)
    return app


STORE_RETRY_SECONDS = 2.0


async def _start_store(deps: AppDeps) -> asyncio.Task[None] | None:
    """Open the store; when it is unreachable, serve anyway (routes answer 503 with
    Retry-After, /readyz is 503) and keep retrying in the background."""
    try:
        await deps.store.start()
        return None
    except BackendUnavailable as exc:
        log.warning("store unreachable at start; retrying in the background", error=exc.detail)

    async def retry() -> None:
        while True:
            await asyncio.sleep(STORE_RETRY_SECONDS)
            try:
                await deps.store.start()
            except BackendUnavailable:
                continue
            log.info("store reachable again")
            return

    return asyncio.create_task(retry(), name="store-start-retry")
