"""The model gateway as its own app (``sandbox gateway``; Kubernetes: its own Deployment).

Only ``/llm/`` (``routes.llm``) plus ``/healthz``, ``/readyz`` and ``/metrics``. It holds
no state of its own: tokens, reservations and usage are the ledger's (a SQL database
shared by every replica), so any number of replicas can serve behind one Service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .. import __version__
from ..domain.errors import BackendUnavailable
from ..services.gateway import GatewayService
from . import errors
from .metrics import HttpMetrics, ObservabilityMiddleware
from .routes import llm

log = structlog.get_logger(__name__)

Hook = Callable[[], Awaitable[None]]
READINESS_PROBE_TOKEN = "readiness-probe"  # never a valid token: only reaches the ledger


def create_gateway_app(
    gateway: GatewayService,
    *,
    registry: CollectorRegistry,
    on_start: Sequence[Hook] = (),
    on_stop: Sequence[Hook] = (),
) -> FastAPI:
    """``on_start`` hooks run in order before serving (the ledger's start), ``on_stop``
    hooks after (its close); the gateway's own pool opens and closes in between."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in on_start:
            await hook()
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()
            for hook in on_stop:
                try:
                    await hook()
                except Exception:
                    log.exception("gateway part failed to stop")

    app = FastAPI(
        title="OpenOva Sandbox model gateway",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.shutdown_hooks = []
    errors.install(app)
    app.add_middleware(llm.LlmMiddleware, gateway=gateway)
    app.add_middleware(ObservabilityMiddleware, metrics=HttpMetrics(registry))

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready when the ledger answers (an unknown token is looked up)."""
        try:
            await gateway.ledger.authenticate(READINESS_PROBE_TOKEN)
        except BackendUnavailable as exc:
            return JSONResponse(
                {"error": exc.code, "detail": exc.detail},
                status_code=503,
                headers={"Retry-After": str(exc.retry_after)},
            )
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
