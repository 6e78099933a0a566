"""``preview.*``: run a command that serves HTTP on a port of the token's sandbox and get
an authenticated URL for it (docs/mcp.md, "Previews"; services/previews.py).

The tools act on the token's own sandbox only: an agent previews its own work. The URL
is the preview's link: it opens for the sandbox's owner (and the org's admins, as the
console does), signed in, and sends the browser into a capability path of that user's
where the preview's pages run sandboxed (api/routes/preview.py). The agent gets the
link, never a capability: its user's sign-in is what opens the preview.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...domain.errors import Invalid
from ...domain.model import Sandbox
from ...services.kube_previews import PreviewBackend
from ...services.previews import MAX_PORT, MAX_WAIT, MIN_PORT
from .base import McpServices, Tool, ToolContext, object_schema

PORT = {
    "type": "integer",
    "minimum": MIN_PORT,
    "maximum": MAX_PORT,
    "description": "the TCP port the command listens on (also given to it as $PORT)",
}


def _available(services: McpServices) -> bool:
    return services.previews is not None and services.sessions is not None


async def _own_sandbox(ctx: ToolContext) -> Sandbox:
    sandbox: Sandbox = await ctx.services.sessions.get(ctx.caller.principal(), ctx.caller.sandbox)
    return sandbox


def _previews(ctx: ToolContext) -> PreviewBackend:
    previews: PreviewBackend = ctx.services.previews
    return previews


async def start(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    sandbox = await _own_sandbox(ctx)
    previews = _previews(ctx)
    public = args.get("public", False)
    if public is not False:
        # Kubernetes mode publishes a port on the sandbox's route host; embedded mode
        # has no route of its own to publish it on
        if not getattr(previews, "supports_public", False):
            raise Invalid(
                "public previews need Kubernetes mode (an HTTPRoute); this server "
                "serves previews through its authenticated proxy only",
                code="preview-public-unavailable",
            )
        start_public: Any = previews.start_preview
        return await start_public(
            sandbox, args.get("port"), args.get("command"), wait=args.get("wait", 10), public=public
        )
    return await previews.start_preview(
        sandbox, args.get("port"), args.get("command"), wait=args.get("wait", 10)
    )


async def stop(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    sandbox = await _own_sandbox(ctx)
    return await _previews(ctx).stop_preview(sandbox, args.get("port"))


async def list_(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    sandbox = await _own_sandbox(ctx)
    return {"previews": _previews(ctx).list_previews(sandbox)}


TOOLS: list[Tool] = [
    Tool(
        name="preview.start",
        description=(
            "Run a shell command in this sandbox's workspace that serves HTTP on `port` "
            "(given to it as $PORT; bind 127.0.0.1, or 0.0.0.0 in Kubernetes mode, where "
            "the sandbox's pod has a network of its own), and get the URL where the sandbox's "
            "owner opens it, signed in. Waits up to `wait` seconds for it to listen. "
            "Status: starting, listening, or exited with its exit code; `output` is the "
            "tail of what it printed. One preview per port; a few per sandbox."
        ),
        input_schema=object_schema(
            {
                "port": PORT,
                "command": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 4096,
                    "description": "run with /bin/sh -c, e.g. `python3 -m http.server $PORT`",
                },
                "wait": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": MAX_WAIT,
                    "description": "seconds to wait for it to listen (default 10)",
                },
                "public": {
                    "type": "boolean",
                    "description": (
                        "Kubernetes mode only: also publish it, without sign-in, on the "
                        "sandbox's route host (anyone with the link opens it)"
                    ),
                },
            },
            required=("port", "command"),
        ),
        handler=start,
        available=_available,
    ),
    Tool(
        name="preview.stop",
        description="End the preview on `port` (every process it started) and forget it.",
        input_schema=object_schema({"port": PORT}, required=("port",)),
        handler=stop,
        available=_available,
    ),
    Tool(
        name="preview.list",
        description=(
            "This sandbox's previews: port, command, status (starting, listening, "
            "exited with exitCode), URL and the tail of their output."
        ),
        input_schema=object_schema({}),
        handler=list_,
        available=_available,
    ),
]
