"""HTTP metrics and request ids, as one pure-ASGI middleware.

Labels use the matched route *template* (``/api/v1/sandbox/sessions/{id}``), never the
raw path or query string: bounded cardinality, and no token from ``?access_token=``
can reach a label or a log line.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("openova_sandbox.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
OWN_LOG_LINE = "sandbox.own_log_line"  # scope key: the route logged this request itself


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "sandbox_http_requests_total",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "sandbox_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 0
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if scope["type"] == "http":
                elapsed = time.perf_counter() - started
                route = _route_template(scope)
                method = scope["method"]
                self.metrics.requests.labels(method, route, str(status or 500)).inc()
                self.metrics.latency.labels(method, route).observe(elapsed)
                # a route that logs its own, richer line per request sets this (the model
                # gateway: one line a call, with the request id, bench/gateway.py)
                if not scope.get(OWN_LOG_LINE):
                    log.info(
                        "request",
                        method=method,
                        route=route,
                        status=status or 500,
                        duration_ms=round(elapsed * 1000, 2),
                    )
            structlog.contextvars.unbind_contextvars("request_id")
