"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...domain.errors import BackendUnavailable
from .. import schemas

router = APIRouter(tags=["system"])


@router.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> str:
    """The process is up (no dependency checked)."""
    return "ok"


@router.get(
    "/readyz",
    responses={200: {"description": "store reachable"}, 503: {"model": schemas.ErrorBody}},
)
async def readyz(request: Request) -> JSONResponse:
    """Ready when the store answers; 503 with Retry-After otherwise."""
    try:
        await request.app.state.deps.store.ping()
    except BackendUnavailable as exc:
        return JSONResponse(
            {"error": exc.code, "detail": exc.detail},
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.deps.metrics_registry),
        media_type=CONTENT_TYPE_LATEST,
    )
