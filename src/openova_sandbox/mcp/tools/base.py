"""What every MCP tool is made of: its name (``family.verb``), description, JSON schema
and an async handler that gets the call's context and its checked arguments.

A handler returns JSON-able data (the server sends it as structured content and as
text) or raises a ``domain.errors.SandboxError`` (the server answers a tool error with
its detail: the agent reads why). It acts only as the token's owner: ``ctx.caller``
names the sandbox, its owner and org; ``ctx.caller.principal()`` is the owner without
any role, so an agent never gets its user's admin rights.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...config import Settings
from ...domain.principal import Principal
from ..capabilities import Grant


@dataclass(frozen=True)
class McpCaller:
    """Whom an MCP token speaks for: one sandbox (namespace, name, uid), its owner and
    org, and what it may call."""

    namespace: str
    sandbox: str
    uid: str
    owner_sub: str
    owner_email: str
    org: str
    grant: Grant
    # the MCP token itself: relayed to this sandbox's own terminal server, which holds
    # the same one and lists its terminals for it (Kubernetes mode); never compared,
    # never shown
    token: str = field(default="", repr=False, compare=False)

    def principal(self) -> Principal:
        return Principal(sub=self.owner_sub, email=self.owner_email, org=self.org)

    def may(self, name: str) -> bool:
        return self.grant.allows(name)


@dataclass
class McpServices:
    """What tools reach, assembled by the entry point (``sandbox serve`` or ``sandbox
    mcp``). ``None``: not available in this mode (the tools needing it are not listed)."""

    settings: Settings
    store: Any = None  # store.base.Store
    sessions: Any = None  # services.sessions.SessionsService
    informer: Any = None  # services.resources.SandboxInformer
    terminals: Any = None  # services.terminals.TerminalsService (embedded)
    ledger: Any = None  # services.gateway_ledger.Ledger (usage)
    bus: Any = None  # events.bus.EventBus
    workspace: Any = None  # workspace index (workspace.*)
    secrets: Any = None  # sandbox-scoped secret store (secrets.*)
    previews: Any = None  # preview runner (preview.*)
    kube: Any = None  # Kubernetes read access (k8s.read.*)
    live: Any = None  # live resources: openova://… read and subscribe (mcp.resources)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolContext:
    caller: McpCaller
    services: McpServices


Handler = Callable[[ToolContext, Mapping[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: Mapping[str, Any]
    handler: Handler
    # a tool whose service is missing in this mode is not listed (e.g. k8s.read.* embedded)
    available: Callable[[McpServices], bool] = field(default=lambda _services: True)

    @property
    def family(self) -> str:
        return self.name.rsplit(".", 1)[0]


def object_schema(
    properties: Mapping[str, Any], *, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A closed JSON object schema (unknown arguments are refused)."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": False,
    }
