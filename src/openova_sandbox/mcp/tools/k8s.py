"""``k8s.read.*``: what runs in the token's sandbox's own Kubernetes namespace, within
what the sandbox's Role allows (docs/mcp.md, "Kubernetes reads"; services/kube_read.py).
Kubernetes mode only: embedded, there is no cluster and the tools are not listed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...domain.model import Sandbox
from ...services.kube_read import (
    DEFAULT_LIST,
    DEFAULT_TAIL,
    KINDS,
    MAX_LIST,
    MAX_TAIL,
    KubeReader,
)
from .base import McpServices, Tool, ToolContext, object_schema

KIND_NAMES = sorted({k.name for k in KINDS.values()})
NAME = {"type": "string", "minLength": 1, "maxLength": 253}
KIND = {
    "type": "string",
    "description": f"one of {', '.join(KIND_NAMES)} (the sandbox's Role grants no others)",
}
LIMIT = {
    "type": "integer",
    "minimum": 1,
    "maximum": MAX_LIST,
    "description": f"at most this many (default {DEFAULT_LIST})",
}


def _available(services: McpServices) -> bool:
    return services.kube is not None and services.sessions is not None


async def _sandbox(ctx: ToolContext) -> Sandbox:
    sandbox: Sandbox = await ctx.services.sessions.get(ctx.caller.principal(), ctx.caller.sandbox)
    return sandbox


def _reader(ctx: ToolContext) -> KubeReader:
    reader: KubeReader = ctx.services.kube
    return reader


async def get(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    return await _reader(ctx).get(await _sandbox(ctx), args.get("kind"), args.get("name"))


async def list_(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    return await _reader(ctx).list(
        await _sandbox(ctx), args.get("kind"), labels=args.get("labels"), limit=args.get("limit")
    )


async def logs(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    return await _reader(ctx).logs(
        await _sandbox(ctx), args.get("pod"), container=args.get("container"), tail=args.get("tail")
    )


async def events(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    return await _reader(ctx).events(
        await _sandbox(ctx), name=args.get("name"), limit=args.get("limit")
    )


TOOLS: list[Tool] = [
    Tool(
        name="k8s.read.get",
        description=(
            "One object of this sandbox's Kubernetes namespace, whole (without managedFields; "
            f"long ConfigMap values cut). Kinds: {', '.join(KIND_NAMES)}; never Secrets."
        ),
        input_schema=object_schema({"kind": KIND, "name": NAME}, required=("kind", "name")),
        handler=get,
        available=_available,
    ),
    Tool(
        name="k8s.read.list",
        description=(
            "The objects of one kind in this sandbox's namespace, as short summaries "
            "(status, readiness, ports…), optionally those with the given labels; `more` "
            "says the limit cut the list."
        ),
        input_schema=object_schema(
            {
                "kind": KIND,
                "labels": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "only objects with every one of these label values",
                },
                "limit": LIMIT,
            },
            required=("kind",),
        ),
        handler=list_,
        available=_available,
    ),
    Tool(
        name="k8s.read.logs",
        description=(
            "The last lines of a pod's log in this sandbox's namespace (one container's; "
            "name it when the pod has several)."
        ),
        input_schema=object_schema(
            {
                "pod": NAME,
                "container": NAME,
                "tail": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TAIL,
                    "description": f"lines from the end (default {DEFAULT_TAIL})",
                },
            },
            required=("pod",),
        ),
        handler=logs,
        available=_available,
    ),
    Tool(
        name="k8s.read.events",
        description=(
            "The events of this sandbox's namespace, newest first: type, reason, message "
            "and the object; `name` keeps those about one object."
        ),
        input_schema=object_schema({"name": NAME, "limit": LIMIT}),
        handler=events,
        available=_available,
    ),
]
