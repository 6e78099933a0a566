"""``sandbox.*``: the owner's sandboxes, as the owner (docs/mcp.md, "Tools: session,
sandbox, usage"). An agent may list its user's sandboxes, start a helper sandbox for
that user (the user's quotas apply), delete one of the user's other sandboxes and list a
sandbox's terminals; never anything of another user, never the org's as an admin
(``McpCaller.principal()`` carries no role)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...domain import audit
from ...domain.errors import Invalid
from ...domain.model import Sandbox
from ...domain.status import to_item
from ...services.sessions import CreateRequest
from .base import McpServices, Tool, ToolContext, object_schema
from .session import lists_terminals, terminals_view, usage_30d

ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 253,
    "description": "a sandbox id, as sandbox.list gives it",
}


def _sessions(services: McpServices) -> bool:
    return services.sessions is not None


async def _items(ctx: ToolContext, sandboxes: list[Sandbox]) -> list[dict[str, Any]]:
    usage = await usage_30d(ctx, sandboxes)
    return [to_item(s, usage.get(s.name) if usage else None) for s in sandboxes]


def _audit(ctx: ToolContext) -> Any:
    return ctx.services.extra.get("audit")


async def list_(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    sandboxes = await ctx.services.sessions.list(ctx.caller.principal())
    return {"sandboxes": await _items(ctx, list(sandboxes)), "current": ctx.caller.sandbox}


async def create(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    principal = ctx.caller.principal()
    request = CreateRequest(agent=args["agent"], name=args.get("name"), repo=args.get("repo"))
    log = _audit(ctx)
    if log is None:
        stored: Sandbox = await ctx.services.sessions.create(principal, request)
    else:
        wanted = f"sandbox/{request.name}" if request.name else "sandbox"
        detail = {"agent": request.agent, "via": f"mcp:{ctx.caller.sandbox}"}
        async with log.action(audit.SANDBOX_CREATE, principal, target=wanted, detail=detail) as n:
            stored = await ctx.services.sessions.create(principal, request)
            n.target = f"sandbox/{stored.name}"
    (item,) = await _items(ctx, [stored])
    return item


async def delete(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    target = str(args["id"])
    if target == ctx.caller.sandbox:
        raise Invalid(
            "an agent cannot delete its own sandbox (its owner can, from the console)",
            code="own-sandbox",
        )
    principal = ctx.caller.principal()
    # present and the owner's (deleting what is gone is not an error for the API, but an
    # agent that names a sandbox that is not there should hear so)
    await ctx.services.sessions.get(principal, target)
    log = _audit(ctx)
    if log is None:
        await ctx.services.sessions.delete(principal, target)
    else:
        detail = {"via": f"mcp:{ctx.caller.sandbox}"}
        async with log.action(
            audit.SANDBOX_DELETE, principal, target=f"sandbox/{target}", detail=detail
        ):
            await ctx.services.sessions.delete(principal, target)
    return {"id": target, "deleted": True}


async def terminals(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    target = str(args.get("id") or ctx.caller.sandbox)
    sandbox: Sandbox = await ctx.services.sessions.get(ctx.caller.principal(), target)
    # where no terminals are held the tool is not listed; called anyway: not-here
    return {"id": sandbox.name, **await terminals_view(ctx.services, ctx.caller, sandbox)}


TOOLS: list[Tool] = [
    Tool(
        name="sandbox.list",
        description=(
            "The sandboxes of this sandbox's owner (this one included: `current`), each "
            "with status, agent, repo, conditions and model usage of the last 30 days."
        ),
        input_schema=object_schema({}),
        handler=list_,
        available=_sessions,
    ),
    Tool(
        name="sandbox.create",
        description=(
            "Start a helper sandbox for this sandbox's owner, running `agent` (see "
            "session.info's agents; `shell` for a plain shell), optionally named and "
            "with a repo cloned. The owner's quotas apply. Returns the new sandbox; it "
            "turns running once its workspace is ready."
        ),
        input_schema=object_schema(
            {
                "agent": {"type": "string", "minLength": 1, "maxLength": 64},
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 63,
                    "description": "a display name (default: derived from the agent)",
                },
                "repo": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 512,
                    "description": "a repository of the org's git server (owner/name)",
                },
            },
            required=("agent",),
        ),
        handler=create,
        available=_sessions,
    ),
    Tool(
        name="sandbox.delete",
        description=(
            "Delete another sandbox of this sandbox's owner (its terminals stop and its "
            "workspace is removed). This sandbox itself cannot be deleted from here."
        ),
        input_schema=object_schema({"id": ID}, required=("id",)),
        handler=delete,
        available=_sessions,
    ),
    Tool(
        name="sandbox.terminals",
        description=(
            "The open terminals of a sandbox of this owner (default: this one): id, "
            "agent and attach path of each. In Kubernetes mode another sandbox's are "
            "not listed (terminals null): only how many it has (sessions)."
        ),
        input_schema=object_schema({"id": ID}),
        handler=terminals,
        available=lambda s: _sessions(s) and lists_terminals(s),
    ),
]
