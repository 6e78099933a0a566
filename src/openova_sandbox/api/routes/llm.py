"""The model gateway's HTTP surface, under ``/llm/`` (docs/gateway.md).

- OpenAI-compatible: ``POST /llm/openai/v1/chat/completions``, ``POST …/responses``,
  ``GET …/models`` (``OPENAI_BASE_URL`` = ``<server>/llm/openai/v1``).
- Anthropic-compatible: ``POST /llm/anthropic/v1/messages`` and ``…/messages/count_tokens``
  (``ANTHROPIC_BASE_URL`` = ``<server>/llm/anthropic``).

The token is a sandbox's gateway token, from ``Authorization: Bearer`` or ``x-api-key``
(what the OpenAI and Anthropic SDKs send). Every error is in the caller's API shape, so an
agent prints its message: OpenAI ``{"error": {"message", "type", "code", "param"}}``,
Anthropic ``{"type": "error", "error": {"type", "message"}}``. A budget refusal also
says ``x-should-retry: false``, which both SDKs honour instead of retrying a 429.

The answer is sent as the upstream's chunks arrive. A watcher waits for the caller to
disconnect the whole time (also while a non-streamed answer is still being generated) and
cancels the upstream request when it does; what was received is metered either way.

These routes are not in the OpenAPI document: they are the providers' APIs, not ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any, Literal

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ...domain.errors import (
    BackendUnavailable,
    Invalid,
    NotFound,
    QuotaExceeded,
    SandboxError,
    Unauthenticated,
)
from ...gateway.upstream import UpstreamError
from ...services.gateway import (
    ANTHROPIC_COUNT_TOKENS,
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    Endpoint,
    Exchange,
    GatewayService,
)
from ...services.gateway_ledger import GatewayIdentity

log = structlog.get_logger("openova_sandbox.gateway")

router = APIRouter(include_in_schema=False)
Shape = Literal["openai", "anthropic"]
PREFIX = "/llm"


class BodyTooLarge(SandboxError):
    code = "request-too-large"


def status_of(exc: SandboxError) -> int:
    if isinstance(exc, UpstreamError):
        return exc.status
    for cls, status in (
        (Unauthenticated, 401),
        (NotFound, 404),
        (BodyTooLarge, 413),
        (QuotaExceeded, 429),
        (Invalid, 400),
        (BackendUnavailable, 503),
    ):
        if isinstance(exc, cls):
            return status
    return 500


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "insufficient_quota",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
}


def _openai_code(exc: SandboxError, status: int) -> str:
    if status == 401:
        return "invalid_api_key"
    return exc.code.replace("-", "_")


def error_payload(shape: Shape, status: int, message: str, code: str) -> dict[str, Any]:
    if shape == "openai":
        return {
            "error": {
                "message": message,
                "type": _OPENAI_TYPES.get(status, "server_error"),
                "param": None,
                "code": code,
            }
        }
    return {
        "type": "error",
        "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message},
    }


def error_response(shape: Shape, exc: SandboxError) -> JSONResponse:
    status = status_of(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, QuotaExceeded):
        headers["x-should-retry"] = "false"
    if isinstance(exc, BackendUnavailable):
        headers["retry-after"] = str(exc.retry_after)
    if status == 401:
        headers["www-authenticate"] = "Bearer"
    message = exc.detail or exc.code
    if status >= 500 and not isinstance(exc, UpstreamError | BackendUnavailable):
        log.error("llm_gateway_error", error_type=type(exc).__name__, error=exc.detail)
        message = "internal error of the model gateway; see the server log"
    return JSONResponse(
        error_payload(shape, status, message, _openai_code(exc, status)),
        status_code=status,
        headers=headers,
    )


def _stream_error_event(shape: Shape, exc: UpstreamError) -> bytes:
    """An SSE event telling a client the stream broke off (headers were already sent)."""
    payload = json.dumps(error_payload(shape, exc.status, exc.detail, _openai_code(exc, 502)))
    if shape == "anthropic":
        return f"event: error\ndata: {payload}\n\n".encode()
    return f"data: {payload}\n\n".encode()


def gateway_of(request: Request) -> GatewayService:
    gateway: GatewayService = request.app.state.gateway
    return gateway


def token_of(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


async def read_body(request: Request, limit: int) -> bytes:
    too_large = BodyTooLarge(f"request bodies are limited to {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        parts.append(chunk)
    return b"".join(parts)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ProxyResponse(Response):
    """Opens the exchange and passes its chunks on, watching for the caller to leave."""

    def __init__(
        self,
        gateway: GatewayService,
        endpoint: Endpoint,
        shape: Shape,
        identity: GatewayIdentity,
        body: bytes,
        headers: Mapping[str, str],
    ) -> None:
        self.status_code = 200
        self.background = None
        self._gateway = gateway
        self._endpoint = endpoint
        self._shape = shape
        self._identity = identity
        self._body = body
        self._caller_headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        work = asyncio.ensure_future(self._run(scope, receive, send))
        watch = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():
                # the caller left (or the server is stopping): cancelling the work closes
                # the upstream connection; its own cleanup settles what was received
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            watch.cancel()
        if not work.cancelled():
            work.result()

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            exchange = await self._gateway.open(
                self._endpoint, self._identity, self._body, self._caller_headers
            )
        except SandboxError as exc:
            await error_response(self._shape, exc)(scope, receive, send)
            return
        await self._pump(exchange, send)

    async def _pump(self, exchange: Exchange, send: Send) -> None:
        outcome: str | None = None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": exchange.status,
                    "headers": exchange.headers,
                }
            )
            try:
                async for chunk in exchange.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError as exc:
                outcome = exc.code
                if exchange.streaming:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": _stream_error_event(self._shape, exc),
                            "more_body": True,
                        }
                    )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the caller went away while we sent
            outcome = "client-gone"
        except asyncio.CancelledError:
            outcome = "client-gone"
            raise
        finally:
            await asyncio.shield(exchange.finish(outcome=outcome))


def _endpoint_route(endpoint: Endpoint, shape: Shape) -> Any:
    async def handler(request: Request) -> Response:
        gateway = gateway_of(request)
        try:
            identity = await gateway.authenticate(token_of(request.headers))
            body = await read_body(request, gateway.max_request_bytes)
        except SandboxError as exc:
            return error_response(shape, exc)
        return ProxyResponse(gateway, endpoint, shape, identity, body, request.headers)

    return handler


router.add_api_route(
    f"{PREFIX}/openai/v1/chat/completions",
    _endpoint_route(OPENAI_CHAT, "openai"),
    methods=["POST"],
    name="llm_openai_chat",
)
router.add_api_route(
    f"{PREFIX}/openai/v1/responses",
    _endpoint_route(OPENAI_RESPONSES, "openai"),
    methods=["POST"],
    name="llm_openai_responses",
)
router.add_api_route(
    f"{PREFIX}/anthropic/v1/messages",
    _endpoint_route(ANTHROPIC_MESSAGES, "anthropic"),
    methods=["POST"],
    name="llm_anthropic_messages",
)
router.add_api_route(
    f"{PREFIX}/anthropic/v1/messages/count_tokens",
    _endpoint_route(ANTHROPIC_COUNT_TOKENS, "anthropic"),
    methods=["POST"],
    name="llm_anthropic_count_tokens",
)


@router.get(f"{PREFIX}/openai/v1/models", name="llm_openai_models")
async def openai_models(request: Request) -> Response:
    gateway = gateway_of(request)
    try:
        await gateway.authenticate(token_of(request.headers))
    except SandboxError as exc:
        return error_response("openai", exc)
    return JSONResponse(await gateway.models("openai"))


@router.api_route(
    PREFIX + "/{shape}/{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    name="llm_not_served",
)
async def not_served(request: Request, shape: str, rest: str) -> Response:
    """Any other path under the gateway: a 404 in the caller's shape."""
    detail = f"{request.method} {request.url.path} is not served by this model gateway"
    if shape not in ("openai", "anthropic"):
        return JSONResponse({"error": "not-found", "detail": detail}, status_code=404)
    caller: Shape = "openai" if shape == "openai" else "anthropic"
    return error_response(caller, NotFound(detail, code="not-found"))
