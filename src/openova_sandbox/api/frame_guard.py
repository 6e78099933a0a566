"""No page of this server may be framed by another site (clickjacking, issue 11).

Every HTML response (the console and its deep links, ``/login``'s pages, the "not
built" page) gets ``Content-Security-Policy: frame-ancestors 'none'`` and
``X-Frame-Options: DENY`` (for browsers that predate ``frame-ancestors``). A page that
sets its own policy keeps it; ``frame-ancestors 'none'`` is added when it lacks the
directive. JSON answers are not documents and are left alone.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FRAME_ANCESTORS = "frame-ancestors 'none'"


class FrameGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if headers.get("content-type", "").lower().startswith("text/html"):
                    guard(headers)
            await send(message)

        await self.app(scope, receive, guarded)


def guard(headers: MutableHeaders) -> None:
    policy = headers.get("content-security-policy", "").strip()
    if "frame-ancestors" not in policy.lower():
        headers["content-security-policy"] = (
            f"{policy.rstrip(';')}; {FRAME_ANCESTORS}" if policy else FRAME_ANCESTORS
        )
    headers["x-frame-options"] = "DENY"
