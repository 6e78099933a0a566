"""The one mapping from the domain error tree to HTTP.

Routes raise domain errors; this module decides status codes and bodies. A route's
generic failure code (``list-failed``, ``create-failed``…) comes from its name, so an
unexpected error still answers the spec's envelope instead of a bare 500 page.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..domain.errors import (
    BackendForbidden,
    BackendUnavailable,
    Forbidden,
    SandboxError,
    Unauthenticated,
    UnusableClaim,
)
from .edge import status_of

log = structlog.get_logger(__name__)

COOKIE_NAME = "catalyst_session"

# route name → the spec's generic failure code for that route
FAILURE_CODES = {
    "list_sessions": "list-failed",
    "create_session": "create-failed",
    "get_session": "get-failed",
    "delete_session": "delete-failed",
}


def error_body(code: str, detail: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": _renderable(code)}
    if detail is not None:
        body["detail"] = _renderable(detail)
    return body


def _renderable(text: str) -> str:
    """``text`` as it can be sent: a string that does not encode as UTF-8 (a lone
    surrogate from somewhere) is escaped, so an error answer never fails to render."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def unauthenticated_response(*, clear_cookie: bool, detail: str | None = None) -> JSONResponse:
    response = JSONResponse(error_body("unauthenticated", detail), status_code=401)
    if clear_cookie:
        response.headers.append(
            "set-cookie",
            f'{COOKIE_NAME}=""; Path=/; Max-Age=-1; HttpOnly; SameSite=Strict',
        )
    return response


def _failure_code(request: Request) -> str:
    route = request.scope.get("route")
    name = getattr(route, "name", "") or ""
    return FAILURE_CODES.get(name, "internal-error")


def to_response(request: Request, exc: SandboxError) -> JSONResponse:
    if isinstance(exc, Unauthenticated):
        return unauthenticated_response(
            clear_cookie=getattr(request.state, "token_source", None) in ("cookie", "session"),
            detail=exc.detail if isinstance(exc, UnusableClaim) else None,
        )
    if isinstance(exc, BackendForbidden):
        log.error("backend refused the request", error=exc.detail)
        return JSONResponse(error_body(_failure_code(request), exc.detail), status_code=500)
    if isinstance(exc, Forbidden) and not exc.detail:
        return JSONResponse({"error": exc.code}, status_code=403)
    status = status_of(exc)  # the table both HTTP edges share
    if status is not None:
        headers = None
        if isinstance(exc, BackendUnavailable):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(
            error_body(exc.code, exc.detail or None), status_code=status, headers=headers
        )
    log.error("unexpected domain error", error_type=type(exc).__name__, error=exc.detail)
    return JSONResponse(error_body(_failure_code(request), exc.detail or exc.code), 500)


def install(app: FastAPI) -> None:
    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SandboxError)
        return to_response(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
        return JSONResponse(error_body("invalid-request", detail), status_code=400)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", route=getattr(request.scope.get("route"), "path", ""))
        return JSONResponse(
            error_body(_failure_code(request), "internal error; see the server log"), 500
        )

    app.add_exception_handler(SandboxError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
