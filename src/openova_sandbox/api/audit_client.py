"""The client address of each request, for the audit log's records.

A pure ASGI middleware: what runs for an HTTP request or a WebSocket (routes, their
dependencies, the services they call, a streaming body) sees the peer address in
``services.audit.client_address()``. The address is the one uvicorn reports: the socket
peer, or the forwarded client when uvicorn trusts the proxy (``--forwarded-allow-ips``).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..services.audit import bind_client


class AuditClientMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            bind_client(str(client[0]) if client else "")
        await self.app(scope, receive, send)
