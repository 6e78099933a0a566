"""The ASGI application factory.

``create_app`` takes assembled dependencies (see ``composition`` for the embedded set)
and adds routes, the error mapping and observability. Start-up opens the store (which
applies migrations) and then the background parts (controller, terminals); shutdown
runs the reverse, so no request is served by a half-built app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from .. import __version__
from . import errors
from .deps import AppDeps
from .metrics import HttpMetrics, ObservabilityMiddleware
from .routes import console, identity, sessions, system

log = structlog.get_logger(__name__)


def create_app(deps: AppDeps) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await deps.store.start()
        started = []
        try:
            for part in deps.background:
                await part.start()
                started.append(part)
            for hook in deps.on_started:
                await hook()
            yield
        finally:
            for part in reversed(started):
                try:
                    await part.stop()
                except Exception:
                    log.exception("background part failed to stop", part=type(part).__name__)
            await deps.store.close()

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
    errors.install(app)
    app.add_middleware(ObservabilityMiddleware, metrics=HttpMetrics(deps.metrics_registry))
    app.include_router(system.router)
    app.include_router(identity.router)
    app.include_router(sessions.router)
    app.include_router(console.router)
    return app
