"""``OPTIONS`` always passes (sessions-api.md, "Authentication"): no token needed.

Every route's own authentication is a dependency, and FastAPI would answer ``OPTIONS`` on
a route that lacks it with 405. This middleware answers it first: 204 with ``Allow``
listing the methods of the routes the path matches, and 404 (the app's usual answer)
when none does. It adds no ``Access-Control-Allow-*`` headers, so a browser on another
origin is still refused by its CORS check: the console is same-origin, and a preflight
that passes authentication is not one that grants access. The one exception is a
preview's capability path (``/preview/<sandbox>/<port>/~<grant>/…``), whose route answers
its own page's preflights (api/routes/preview.py).
"""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class PreflightMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS" or _capability(scope["path"]):
            await self.app(scope, receive, send)
            return
        routes = scope["app"].router.routes
        methods = {
            method
            for method in _METHODS
            if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
        }
        if not methods:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [(b"allow", allow.encode()), (b"cache-control", b"max-age=600")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _capability(path: str) -> bool:
    parts = path.split("/", 5)
    return len(parts) > 4 and parts[1] == "preview" and parts[4].startswith("~")
