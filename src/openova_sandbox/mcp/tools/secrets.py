"""``secrets.*``: the token's own sandbox's secrets (docs/mcp.md, "Secrets";
services/sandbox_secrets.py).

Every call is scoped to the caller's sandbox uid: no argument names a sandbox, so
another sandbox's secrets cannot be asked for. ``secrets.get`` gives the value only when
the grant allows ``secrets.read`` (the plan's and the sandbox's capabilities); without
it, the secret's metadata and why the value is withheld. Values are never logged; each
value read or set is recorded in the audit log (by name).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ...domain.audit import SECRET_READ, SECRET_SET
from ...domain.errors import Invalid
from ...services.sandbox_secrets import (
    MAX_NAME,
    MAX_SECRETS,
    MAX_VALUE_BYTES,
    NAME_PATTERN,
    READ_CAPABILITY,
    SandboxSecrets,
)
from .base import McpServices, Tool, ToolContext, object_schema

# audit actions (docs/api.md, "Audit"): a value handed to an agent, a value stored

WITHHELD = (
    f"the value is withheld: this sandbox's token lacks the {READ_CAPABILITY!r} capability "
    "(its org's plan or the sandbox's spec.capabilities do not allow it)"
)


def _available(services: McpServices) -> bool:
    return services.secrets is not None


def _secrets(ctx: ToolContext) -> SandboxSecrets:
    store: SandboxSecrets = ctx.services.secrets
    return store


def _name(args: Mapping[str, Any]) -> str:
    name = args.get("name")
    if not isinstance(name, str):
        raise Invalid("name is a string", code="invalid-secret-name")
    return name


async def list_(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    infos = await _secrets(ctx).list(ctx.caller.uid)
    return {
        "secrets": [i.to_dict() for i in infos],
        "valuesReadable": ctx.caller.may(READ_CAPABILITY),
    }


async def get(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    name = _name(args)
    if not ctx.caller.may(READ_CAPABILITY):
        info = await _secrets(ctx).info(ctx.caller.uid, name)
        return {**info.to_dict(), "value": None, "withheld": WITHHELD}
    async with _audited(ctx, SECRET_READ, name):
        found = await _secrets(ctx).get(ctx.caller.uid, name)
    return {**found.info.to_dict(), "value": found.value}


async def set_(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    value = args.get("value")
    if not isinstance(value, str):
        raise Invalid("value is a string", code="invalid-secret-value")
    name = _name(args)
    async with _audited(ctx, SECRET_SET, name):
        info = await _secrets(ctx).set(ctx.caller.uid, name, value)
    return info.to_dict()


@contextlib.asynccontextmanager
async def _audited(ctx: ToolContext, action: str, name: str) -> AsyncIterator[None]:
    """The audit log's record of a value read or set, as the owner through this
    sandbox's MCP token (the name, never the value), with its outcome."""
    log = ctx.services.extra.get("audit")
    if log is None:
        yield
        return
    target = f"sandbox/{ctx.caller.sandbox}/secret/{name}"
    detail = {"via": f"mcp:{ctx.caller.sandbox}"}
    async with log.action(action, ctx.caller.principal(), target=target, detail=detail):
        yield


NAME = {
    "type": "string",
    "pattern": f"^{NAME_PATTERN}$",
    "maxLength": MAX_NAME,
    "description": "letters, digits, '_', '.', '-'; starts with a letter or '_'",
}

TOOLS: list[Tool] = [
    Tool(
        name="secrets.list",
        description=(
            "The secrets of this sandbox: names, sizes and when they were set, never "
            "values. `valuesReadable` says whether secrets.get returns values."
        ),
        input_schema=object_schema({}),
        handler=list_,
        available=_available,
    ),
    Tool(
        name="secrets.get",
        description=(
            "One secret of this sandbox. Its value only when this sandbox may read "
            f"secrets ({READ_CAPABILITY!r}); otherwise its metadata and why the value is "
            "withheld."
        ),
        input_schema=object_schema({"name": NAME}, required=("name",)),
        handler=get,
        available=_available,
    ),
    Tool(
        name="secrets.set",
        description=(
            "Store a secret of this sandbox, new or in place of the old value (encrypted "
            "at rest, removed with the sandbox). Values are text up to "
            f"{MAX_VALUE_BYTES // 1024} KiB; at most {MAX_SECRETS} secrets per sandbox."
        ),
        input_schema=object_schema(
            {"name": NAME, "value": {"type": "string", "maxLength": MAX_VALUE_BYTES}},
            required=("name", "value"),
        ),
        handler=set_,
        available=_available,
    ),
]
