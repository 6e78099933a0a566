"""What the app is made of, assembled by an entry point and hung on ``app.state.deps``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from ..auth.signouts import SignOuts
from ..config import Settings
from ..events.bus import EventBus
from ..services.audit import AuditLog, MemoryAuditLog
from ..services.logins import LoginService
from ..services.sessions import SessionsService
from ..store.base import Store
from .security import Authenticator


class Lifecycle(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class JwksPublisher(Protocol):
    @property
    def issuer(self) -> str: ...
    def jwks(self) -> dict[str, Any]: ...
    def openid_configuration(self, *, base_url: str | None = None) -> dict[str, Any]: ...


@dataclass
class AppDeps:
    settings: Settings
    store: Store
    sessions: SessionsService
    authenticator: Authenticator
    logins: LoginService
    cookie_secret: str
    bus: EventBus
    metrics_registry: CollectorRegistry
    issuer: JwksPublisher | None = None
    byos: Any = None
    terminals: Any = None
    resources: Any = None
    # embedded mode: installs of agents started from the API (services.agent_installs)
    agent_installs: Any = None
    # the model gateway under /llm/ (services.gateway.GatewayService); None: not served
    gateway: Any = None
    # the gateway's ledger: tokens, usage, budgets (services.gateway_ledger.Ledger);
    # None: no usage routes, session items without usage30d
    ledger: Any = None
    # share links of sandboxes (services.shares.SharesService); None: not served
    shares: Any = None
    # personal access tokens (services.tokens.TokensService) and quotas per user and
    # org (services.quotas.QuotasService), issue 11; None: not served
    tokens: Any = None
    quotas: Any = None
    # each sandbox's MCP token and the URL its agents reach the MCP server at
    # (services.mcp_tokens.McpTokens; docs/mcp.md); None: no MCP server
    mcp_tokens: Any = None
    # the MCP server mounted at /mcp (mcp.server.McpServer); None: not served here
    mcp: Any = None
    # the MCP tools' data per sandbox (api.sandbox_data): the secrets store
    # (services.sandbox_secrets.SandboxSecrets, both modes) and the workspace index
    # (services.workspace_index.WorkspaceIndex, embedded only); None: not kept here
    sandbox_secrets: Any = None
    workspace_index: Any = None
    # the sandboxes' previews served under /preview/ (a services.kube_previews
    # .PreviewBackend: embedded PreviewsService, Kubernetes KubePreviews; docs/mcp.md,
    # "Previews"); None: not served here
    previews: Any = None
    # Kubernetes mode: the sandboxes' namespaces read for k8s.read.* (services.kube_read
    # .KubeReader; docs/mcp.md, "Kubernetes reads"); None: no cluster here
    kube_reader: Any = None
    # the audit log (services.audit): ``await deps.audit.record(action, caller, ...)``
    audit: AuditLog = field(default_factory=MemoryAuditLog)
    # console sessions signed in with the OIDC issuer (auth.oidc_sessions.OidcSessions);
    # None: no OIDC client configured
    oidc_sessions: Any = None
    # token cookies signed out of (POST /logout), until they expire: what was opened
    # from them (preview grants) ends with them
    signouts: SignOuts = field(default_factory=SignOuts)
    # embedded mode: the isolation of the terminals (services.isolation.IsolationState);
    # None: not this server's to say (Kubernetes mode: the pods)
    isolation: Any = None
    # started in order after the store, stopped in reverse before it
    background: list[Lifecycle] = field(default_factory=list)
    on_started: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # told the (host, port) the server listens on, once bound (serving.bound_hooks)
    on_bound: list[Callable[[str, int], None]] = field(default_factory=list)
    # what the agents are checked against (missing variables): the environment a
    # sandbox's terminals get for models, with stand-ins for the token; None: unknown
    agent_env: Mapping[str, str] | None = None
