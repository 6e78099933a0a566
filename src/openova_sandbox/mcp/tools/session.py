"""``session.*``: who this agent is and where it runs (docs/mcp.md, "Tools: session,
sandbox, usage"). Read-only; about the token's own sandbox only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...domain.errors import BackendUnavailable, NotFound, SandboxError
from ...domain.model import Sandbox
from ...domain.status import to_item
from ...services.terminals import TerminalsService
from .base import McpCaller, McpServices, Tool, ToolContext, object_schema

if TYPE_CHECKING:
    from ...services.remote_terminals import RemoteTerminals

# what the server leaves in McpServices.extra for the tools that describe the grant
SERVER_KEY = "mcp.server"


def _plan(ctx: ToolContext) -> str:
    server = ctx.services.extra.get(SERVER_KEY)
    return str(server.plans.plan_of(ctx.caller.org)) if server is not None else ""


def _visible_tools(ctx: ToolContext) -> list[str]:
    server = ctx.services.extra.get(SERVER_KEY)
    if server is None:
        return []
    return [t.name for t in server.tools_for(ctx.caller)]


async def own_sandbox(ctx: ToolContext) -> Sandbox:
    """The token's sandbox, as its owner sees it (``NotFound`` when gone)."""
    sandbox: Sandbox = await ctx.services.sessions.get(ctx.caller.principal(), ctx.caller.sandbox)
    return sandbox


def embedded_terminals(services: McpServices) -> TerminalsService | None:
    """The in-process terminals (embedded mode); ``None`` in Kubernetes mode."""
    terminals = services.terminals
    return terminals if isinstance(terminals, TerminalsService) else None


def remote_terminals(services: McpServices) -> RemoteTerminals | None:
    """Kubernetes mode's terminals: each sandbox's own terminal server, which lists its
    terminals for the sandbox's own MCP token (``RemoteTerminals.list_for_mcp``)."""
    terminals = services.terminals
    if terminals is None or isinstance(terminals, TerminalsService):
        return None
    from ...services.remote_terminals import RemoteTerminals

    return terminals if isinstance(terminals, RemoteTerminals) else None


def lists_terminals(services: McpServices) -> bool:
    """Whether this server can show sandboxes' terminals (either mode)."""
    return embedded_terminals(services) is not None or remote_terminals(services) is not None


# what another sandbox's terminals are in Kubernetes mode (docs/mcp.md)
OTHER_POD = (
    "only this sandbox's own terminals are listed here (its terminal server admits this "
    "token; another sandbox's does not): sessions is the count its operator last "
    "published"
)


def own(caller: McpCaller, sandbox: Sandbox) -> bool:
    """Whether ``sandbox`` is the caller's own (this very object: a sandbox re-created
    under the name has another uid)."""
    return (
        caller.namespace == sandbox.namespace
        and caller.sandbox == sandbox.name
        and (not caller.uid or caller.uid == sandbox.metadata.uid)
    )


async def terminals_view(
    services: McpServices, caller: McpCaller, sandbox: Sandbox
) -> dict[str, Any]:
    """``{"terminals": [{id, agent, attachUrl}]}``. In Kubernetes mode the caller's own
    sandbox's are its terminal server's answer to the relayed MCP token; another
    sandbox's are ``{"terminals": null, "sessions": <status.sessions>, "detail"}``:
    that pod holds another token, and the MCP server has no credential of its own there.
    ``NotFound`` ``not-here`` where no terminals are held at all."""
    embedded = embedded_terminals(services)
    if embedded is not None:
        return {"terminals": await embedded.list_terminals(sandbox, token="")}
    remote = remote_terminals(services)
    if remote is None:
        raise NotFound("this server does not hold the sandboxes' terminals", code="not-here")
    if own(caller, sandbox):
        return {"terminals": await remote.list_for_mcp(sandbox, caller.token)}
    return {"terminals": None, "sessions": sandbox.status.sessions, "detail": OTHER_POD}


async def usage_30d(ctx: ToolContext, sandboxes: list[Sandbox]) -> dict[str, Any] | None:
    """Each sandbox's model usage of the last 30 days; ``None`` without a ledger or when
    it does not answer (the items are then shown without usage)."""
    if ctx.services.ledger is None or not sandboxes:
        return None
    from ...services.usage import UsageService

    service = UsageService(ledger=ctx.services.ledger, sessions=ctx.services.sessions)
    return await service.sandbox_usage(ctx.caller.principal(), sandboxes)


async def whoami(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    caller = ctx.caller
    return {
        "sandbox": {"id": caller.sandbox, "namespace": caller.namespace, "uid": caller.uid},
        "owner": {"email": caller.owner_email, "sub": caller.owner_sub},
        "org": caller.org,
        "plan": _plan(ctx),
        "capabilities": list(caller.grant.sandbox),
        "tools": _visible_tools(ctx),
    }


async def info(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    sandbox = await own_sandbox(ctx)
    usage = await usage_30d(ctx, [sandbox])
    item = to_item(sandbox, usage.get(sandbox.name) if usage else None)
    out: dict[str, Any] = {
        "sandbox": item,
        "org": ctx.caller.org,
        "plan": _plan(ctx),
        "owner": {"email": ctx.caller.owner_email, "sub": ctx.caller.owner_sub},
        "quota": sandbox.spec.quota.to_dict(),
        "repos": list(sandbox.spec.repos),
        "agents": list(sandbox.spec.agent_catalogue),
        "usage30d": item.get("usage30d"),
    }
    try:
        view = await terminals_view(ctx.services, ctx.caller, sandbox)
        out["terminals"] = view["terminals"]
    except (BackendUnavailable, SandboxError):  # not ready, unreachable, refused
        out["terminals"] = None
    out["limits"] = await _limits(ctx)
    return out


async def _limits(ctx: ToolContext) -> dict[str, Any] | None:
    """The owner's quotas (issue 11: sandboxes, terminals, ...; ``null``: no limit) and
    the org's, as they apply to a create from here; ``None`` without quotas."""
    quotas = getattr(ctx.services.sessions, "quotas", None)
    if quotas is None:
        return None
    limits = await quotas.limits_of(ctx.caller.principal())
    return {"user": dict(limits.user_limits), "org": dict(limits.org_limits)}


TOOLS: list[Tool] = [
    Tool(
        name="session.whoami",
        description=(
            "Who this agent acts for: its sandbox (id, namespace, uid), the sandbox's "
            "owner, org and plan, and the tools this sandbox may call."
        ),
        input_schema=object_schema({}),
        handler=whoami,
    ),
    Tool(
        name="session.info",
        description=(
            "This sandbox as the console shows it (status, phase, conditions), with its "
            "quota, repos, agents, model usage of the last 30 days (tokens and cost), "
            "open terminals (null where this server does not hold them) and its owner's "
            "and org's limits (sandboxes, terminals; null: none)."
        ),
        input_schema=object_schema({}),
        handler=info,
        available=lambda services: services.sessions is not None,
    ),
]
