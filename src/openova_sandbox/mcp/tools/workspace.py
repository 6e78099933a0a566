"""``workspace.*``: search and read the token's own sandbox workspace (docs/mcp.md,
"Workspace search"; services/workspace_index.py).

Embedded mode only: in Kubernetes mode the workspace is a volume of the sandbox's pod
and ``services.workspace`` is ``None``, so the tools are not listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...domain.errors import Invalid
from ...services.workspace_index import (
    DEFAULT_READ_LINES,
    MAX_QUERY_CHARS,
    MAX_READ_LINES,
    MAX_RESULTS,
    WorkspaceIndex,
)
from .base import McpServices, Tool, ToolContext, object_schema

DEFAULT_RESULTS = 10


def _available(services: McpServices) -> bool:
    return services.workspace is not None


def _index(ctx: ToolContext) -> WorkspaceIndex:
    index: WorkspaceIndex = ctx.services.workspace
    return index


def _int(args: Mapping[str, Any], name: str, default: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{name} is an integer", code=f"invalid-{name}")
    return value


def _str(args: Mapping[str, Any], name: str, default: str | None = None) -> str:
    value = args.get(name, default)
    if not isinstance(value, str):
        raise Invalid(f"{name} is a string", code=f"invalid-{name}")
    return value


async def search(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    caller = ctx.caller
    return await _index(ctx).search(
        caller.namespace,
        caller.sandbox,
        caller.uid,
        _str(args, "query"),
        limit=_int(args, "limit", DEFAULT_RESULTS),
        path=_str(args, "path", ""),
    )


async def read(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    caller = ctx.caller
    return await _index(ctx).read(
        caller.namespace,
        caller.sandbox,
        _str(args, "path"),
        line=_int(args, "line", 1),
        limit=_int(args, "limit", DEFAULT_READ_LINES),
    )


PATH_HELP = "relative to the workspace root, '/'-separated; no '..'"

TOOLS: list[Tool] = [
    Tool(
        name="workspace.search",
        description=(
            "Full-text search (BM25) over the text files of this sandbox's workspace, "
            "up to date with every change made before the call. Words are matched "
            "case-insensitively on letters and digits (`foo_bar` is `foo` and `bar`); "
            '`"a b"` is a phrase, `+word` required, `-word` excluded. Each hit is a '
            "block of lines of one file with its matching lines (line numbers are "
            "1-based). Skips .git, dependency and cache folders, binary and large files; "
            "`index` says how many."
        ),
        input_schema=object_schema(
            {
                "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_RESULTS,
                    "description": f"most hits to return (default {DEFAULT_RESULTS})",
                },
                "path": {
                    "type": "string",
                    "maxLength": 4096,
                    "description": f"only files under this folder ({PATH_HELP})",
                },
            },
            required=("query",),
        ),
        handler=search,
        available=_available,
    ),
    Tool(
        name="workspace.read",
        description=(
            "Read a text file of this sandbox's workspace from `line` (1-based), at most "
            f"`limit` lines (default {DEFAULT_READ_LINES}) and 256 KiB; `nextLine` says "
            "where to continue when `truncated`. A folder gives its entries. Paths stay "
            "in the workspace: '..' and symlinks leading out are refused."
        ),
        input_schema=object_schema(
            {
                "path": {"type": "string", "maxLength": 4096, "description": PATH_HELP},
                "line": {"type": "integer", "minimum": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_READ_LINES},
            },
            required=("path",),
        ),
        handler=read,
        available=_available,
    ),
]
