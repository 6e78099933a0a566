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

Served by :class:`LlmMiddleware`, plain ASGI placed ahead of the application's router:
FastAPI's routing, dependency solving and exception layers cost ~0.4 ms of CPU a request
on the benchmark machine, as much as the whole gateway path, and none of it is needed
here. The request id, the access log line and the HTTP metrics still apply (the
middleware sits inside the observability layer). These paths are not in the OpenAPI
document: they are the providers' APIs, not ours.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
from ..metrics import OWN_LOG_LINE

log = structlog.get_logger("openova_sandbox.gateway")

Shape = Literal["openai", "anthropic"]
PREFIX = "/llm"


class BodyTooLarge(SandboxError):
    code = "request-too-large"


class _ClientGone(Exception):
    pass


@dataclass(frozen=True)
class LlmRoute:
    """What ``scope["route"]`` holds for a gateway path: the access log and the HTTP
    metrics label requests by ``path``, a template, never the raw path."""

    path: str
    methods: tuple[str, ...]
    shape: Shape
    endpoint: Endpoint | None  # None: the model list


ROUTES: dict[str, LlmRoute] = {
    route.path: route
    for route in (
        LlmRoute(f"{PREFIX}/openai/v1/chat/completions", ("POST",), "openai", OPENAI_CHAT),
        LlmRoute(f"{PREFIX}/openai/v1/responses", ("POST",), "openai", OPENAI_RESPONSES),
        LlmRoute(f"{PREFIX}/openai/v1/models", ("GET",), "openai", None),
        LlmRoute(f"{PREFIX}/anthropic/v1/messages", ("POST",), "anthropic", ANTHROPIC_MESSAGES),
        LlmRoute(
            f"{PREFIX}/anthropic/v1/messages/count_tokens",
            ("POST",),
            "anthropic",
            ANTHROPIC_COUNT_TOKENS,
        ),
    )
}
NOT_SERVED = {
    "openai": LlmRoute(f"{PREFIX}/openai/{{rest}}", (), "openai", None),
    "anthropic": LlmRoute(f"{PREFIX}/anthropic/{{rest}}", (), "anthropic", None),
}
UNKNOWN = LlmRoute(f"{PREFIX}/{{rest}}", (), "openai", None)


# --------------------------------------------------------------------------- errors


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
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "insufficient_quota",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
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


async def send_json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, shape: Shape, exc: SandboxError, status: int = 0) -> None:
    status = status or status_of(exc)
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(exc, QuotaExceeded):
        headers.append((b"x-should-retry", b"false"))
    if isinstance(exc, BackendUnavailable):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    message = exc.detail or exc.code
    if status >= 500 and not isinstance(exc, UpstreamError | BackendUnavailable):
        log.error("llm_gateway_error", error_type=type(exc).__name__, error=exc.detail)
        message = "internal error of the model gateway; see the server log"
    payload = error_payload(shape, status, message, _openai_code(exc, status))
    await send_json(send, status, payload, headers)


def log_refusal(scope: Scope, status: int, code: str, started: float) -> None:
    """The one log line of a request answered without reaching an upstream (forwarded
    ones are logged when they settle, services.gateway)."""
    route = scope.get("route")
    log.info(
        "llm_request",
        route=getattr(route, "path", ""),
        status=status,
        outcome=code,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _stream_error_event(shape: Shape, exc: UpstreamError) -> bytes:
    """An SSE event telling a client the stream broke off (headers were already sent)."""
    payload = json.dumps(error_payload(shape, exc.status, exc.detail, _openai_code(exc, 502)))
    if shape == "anthropic":
        return f"event: error\ndata: {payload}\n\n".encode()
    return f"data: {payload}\n\n".encode()


# --------------------------------------------------------------------------- requests


def token_of(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    too_large = BodyTooLarge(f"request bodies are limited to {limit} bytes")
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        parts.append(chunk)
        if not message.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ProxyResponse:
    """Opens the exchange and passes its chunks on, watching for the caller to leave."""

    def __init__(
        self,
        gateway: GatewayService,
        endpoint: Endpoint,
        shape: Shape,
        identity: GatewayIdentity,
        body: bytes,
        headers: Mapping[str, str],
        started: float,
    ) -> None:
        self._gateway = gateway
        self._endpoint = endpoint
        self._shape = shape
        self._identity = identity
        self._body = body
        self._caller_headers = headers
        self._started = started
        self._sent_all = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the work runs in this (the request's) task; one watcher task cancels it when
        # the caller disconnects before the answer was sent in full: that closes the
        # upstream connection, and the work's own cleanup settles what was received
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            await _disconnected(receive)
            if not self._sent_all:
                gone = True
                task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await self._run(scope, send)
        except asyncio.CancelledError:
            if not gone or task.cancelling() > 1:  # also cancelled from outside: stop
                raise
            task.uncancel()
        finally:
            watcher.cancel()

    async def _run(self, scope: Scope, send: Send) -> None:
        try:
            exchange = await self._gateway.open(
                self._endpoint, self._identity, self._body, self._caller_headers
            )
        except UpstreamError as exc:  # logged when its reservation settled
            self._sent_all = True
            await send_error(send, self._shape, exc)
            return
        except SandboxError as exc:  # refused before anything was sent
            log_refusal(scope, status_of(exc), exc.code, self._started)
            self._sent_all = True  # (a disconnect from here on cancels nothing)
            await send_error(send, self._shape, exc)
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
            self._sent_all = True
        except OSError:  # the caller went away while we sent
            outcome = "client-gone"
        except asyncio.CancelledError:
            outcome = "client-gone"
            raise
        finally:
            await asyncio.shield(exchange.finish(outcome=outcome))


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


async def serve(gateway: GatewayService, scope: Scope, receive: Receive, send: Send) -> None:
    """One request under ``/llm/``."""
    path: str = scope["path"]
    route = ROUTES.get(path)
    if route is None:
        shape = path[len(PREFIX) + 1 :].split("/", 1)[0]
        route = NOT_SERVED.get(shape, UNKNOWN)
    scope["route"] = route
    scope[OWN_LOG_LINE] = True
    began = time.perf_counter()
    started = False

    async def tracking(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await _serve(gateway, route, scope, receive, tracking, began)
    except _ClientGone:
        log_refusal(scope, 0, "client-gone", began)
    except Exception as exc:
        log.exception("llm_gateway_unhandled", route=route.path, error_type=type(exc).__name__)
        if not started:
            await send_error(send, route.shape, SandboxError("unexpected"), status=500)


async def _serve(
    gateway: GatewayService,
    route: LlmRoute,
    scope: Scope,
    receive: Receive,
    send: Send,
    began: float,
) -> None:
    method: str = scope["method"]
    if route is UNKNOWN:
        detail = f"{method} {scope['path']} is not served by this model gateway"
        log_refusal(scope, 404, "not-found", began)
        await send_json(send, 404, {"error": "not-found", "detail": detail})
        return
    if method not in route.methods:
        if route.methods:
            allowed = ", ".join(route.methods)
            log_refusal(scope, 405, "not-allowed", began)
            await send_error(
                send,
                route.shape,
                Invalid(f"{method} is not allowed here (allowed: {allowed})", code="not-allowed"),
                status=405,
            )
        else:
            detail = f"{method} {scope['path']} is not served by this model gateway"
            log_refusal(scope, 404, "not-found", began)
            await send_error(send, route.shape, NotFound(detail, code="not-found"))
        return
    headers = _headers(scope)
    try:
        identity = await gateway.authenticate(token_of(headers))
        if route.endpoint is None:
            log_refusal(scope, 200, "models", began)
            await send_json(send, 200, await gateway.models("openai"))
            return
        body = await read_body(receive, headers, gateway.max_request_bytes)
    except SandboxError as exc:
        log_refusal(scope, status_of(exc), exc.code, began)
        await send_error(send, route.shape, exc)
        return
    response = ProxyResponse(gateway, route.endpoint, route.shape, identity, body, headers, began)
    await response(scope, receive, send)


class LlmMiddleware:
    """Serves ``/llm/`` with ``gateway``; every other request goes on to the app."""

    def __init__(self, app: ASGIApp, *, gateway: GatewayService) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX + "/"):
            await serve(self.gateway, scope, receive, send)
        else:
            await self.app(scope, receive, send)
