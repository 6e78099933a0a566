"""Assembling the embedded all-in-one server from Settings.

The one place that knows which concrete store, authenticator, bus and background parts
an embedded `sandbox serve` uses. Tests build the same thing with their own settings
(see ``openova_sandbox.testing``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from ..agents.paths import agent_search_path
from ..auth.authenticator import build_authenticator
from ..auth.issuer import EmbeddedIssuer
from ..auth.share_grant import ShareGrantIssuer
from ..config import Settings
from ..controller.local import STORAGE_SECONDS
from ..controller.runner import EmbeddedController
from ..domain.catalogue import Catalogue, load_catalogue
from ..domain.model import Quota
from ..domain.model_access import ModelAccess, agent_model_env
from ..events.factory import lifecycle_parts, make_bus
from ..events.product import Emitter
from ..gateway.config import GatewayConfig
from ..gateway.config import load_config as load_gateway_config
from ..gateway.metrics import GatewayMetrics
from ..mcp.resources import LiveResources
from ..mcp.server import McpServer
from ..mcp.tools.base import McpServices
from ..services.agent_installs import AgentInstalls
from ..services.audit import make_audit_log
from ..services.byos import ByosService
from ..services.gateway import GatewayService
from ..services.gateway_ledger import (
    GatewayLedger,
    LedgerLifecycle,
    MemoryLedger,
    budget_defaults,
    make_ledger,
)
from ..services.isolation import announce as announce_isolation
from ..services.isolation import decide as decide_isolation
from ..services.kube_previews import KubePreviews
from ..services.kube_read import KubeReader
from ..services.logins import USED_FILE, LoginService, UsedLinks
from ..services.mcp_tokens import InformerLookup, McpTokens
from ..services.notify import attach_webhook
from ..services.previews import PreviewHost, PreviewsService
from ..services.remote_terminals import RemoteTerminals
from ..services.resources import SandboxInformer
from ..services.resources_view import ResourcesService
from ..services.sandbox_tokens import SandboxTokens, preview_access
from ..services.sessions import SessionsPolicy, SessionsService
from ..services.shares import SharesService
from ..services.terminals import TerminalHostAdapter, TerminalsService
from ..store.base import Store
from ..store.factory import make_store
from ..terminal.leftovers import ProcessGroups
from ..terminal.metrics import TerminalMetrics
from ..terminal.registry import TerminalRegistry
from .accounts import add_accounts
from .deps import AppDeps
from .oidc_wiring import oidc_sessions_for, signouts_for
from .sandbox_data import add_sandbox_data
from .terminal_edge.attach import viewer_pump

log = structlog.get_logger(__name__)

COOKIE_SECRET_FILE = "cookie-secret"


class RegistryLifecycle:
    """Stops every terminal (viewers first, then processes) when the server stops."""

    def __init__(self, registry: TerminalRegistry) -> None:
        self._registry = registry

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._registry.close()


def cookie_secret(settings: Settings) -> str:
    """The configured secret, else one generated once and kept in the data dir (0600)."""
    if settings.cookie_secret:
        return settings.cookie_secret
    path = Path(settings.data_dir) / COOKIE_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{secrets.token_hex(4)}")
        # created 0600: never readable by others, not even between write and chmod
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
        tmp.replace(path)
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)  # a copy restored with loose permissions is tightened
    return path.read_text().strip()


def shared_auth_problems(settings: Settings) -> list[str]:
    """What ``sandbox api`` in Kubernetes mode lacks to serve several replicas and the
    sandbox pods (docs/kubernetes.md, "Sign-in across replicas"): every replica and pod
    must trust the same tokens (an external issuer, or one embedded issuer key shared
    by all), and every replica must sign console cookies alike. Empty: nothing lacks."""
    problems = []
    if not (settings.oidc_issuer or settings.jwks_url or settings.issuer_key):
        problems.append(
            "no token issuer shared by every replica and sandbox pod: set "
            "SANDBOX_OIDC_ISSUER (or SANDBOX_JWKS_URL) to an external issuer, or "
            "SANDBOX_ISSUER_KEY from the Secret sandbox-issuer-key"
        )
    if not settings.cookie_secret:
        problems.append(
            "no SANDBOX_COOKIE_SECRET (Secret sandbox-cookie-secret): each replica would "
            "sign console sessions with a key of its own"
        )
    return problems


def offered_catalogue(settings: Settings) -> Catalogue:
    """The catalogue, narrowed to ``SANDBOX_AGENTS`` when set; a name that is not in it
    is logged (and offers nothing) rather than stopping the server."""
    catalogue = load_catalogue(settings.agents_path)
    unknown = sorted(set(settings.agents) - set(catalogue.api_slugs))
    if unknown:
        log.warning("agents_not_in_catalogue", unknown=unknown, offered=catalogue.api_slugs)
    return catalogue.narrowed(settings.agents)


def agent_path(settings: Settings) -> str:
    """Where agents are looked up: the managed agents' bin dir, then the server's PATH;
    the one string create's "installed?" check and the terminal registry's spawns use."""
    return agent_search_path(settings.data_dir)


def sessions_policy(
    settings: Settings, *, kube: bool, agent_env: dict[str, str] | None = None
) -> SessionsPolicy:
    """What create checks. Embedded: the agent search path and the environment the
    terminals give agents (``agent_env``, default :func:`agent_env_preview`).
    Kubernetes: the agents the sandbox image carries (the pods' environment is not this
    process's, so configuration is not checked there)."""
    if agent_env is None and not kube:
        agent_env = agent_env_preview(settings, kube=False)
    return SessionsPolicy(
        default_namespace=settings.default_namespace,
        quota=Quota.from_dict(settings.quota_dict),
        agent_path=None if kube else agent_path(settings),
        image_agents=settings.image_agents if kube else (),
        agent_env=None if kube else agent_env,
        repos_available=bool(settings.git_base_url.strip()),
    )


def served_protocols(config: GatewayConfig) -> tuple[bool, bool]:
    """Whether the gateway has an OpenAI-shaped and an Anthropic-shaped provider."""
    kinds = {p.kind for p in config.providers.values()}
    return "openai" in kinds, "anthropic" in kinds


def agent_env_preview(settings: Settings, *, kube: bool) -> dict[str, str]:
    """The model variables a sandbox's terminals get, with a stand-in token: what the
    agents' missing variables are checked against. Embedded: the built-in gateway's, for
    the protocols it has providers for. Kubernetes: what the operator renders into the
    pods (the gateway Service's URLs; no token yet, docs/gateway.md)."""
    if kube:
        access = ModelAccess(gateway_url=settings.kube_model_gateway_url)
    else:
        openai, anthropic = served_protocols(gateway_config(settings))
        access = preview_access(openai=openai, anthropic=anthropic)
    return agent_model_env(access, settings.agent_model)


def build_control_plane(
    settings: Settings, *, store: Store | None = None, public_url: str = "", kube: bool = False
) -> AppDeps:
    """Everything both modes share: store, auth, sessions, logins, BYOS, resources.
    Terminals and background parts are added by the mode (see below)."""
    data_dir = Path(settings.data_dir)
    # the database (owner emails, sandbox names), keys and workspaces live here: a new
    # data dir is private; an existing one is the operator's choice, but said
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if data_dir.stat().st_mode & 0o077:
        log.warning("data_dir_readable_by_others", path=str(data_dir), fix="chmod 700")
    issuer = (
        EmbeddedIssuer.from_pem(settings.issuer_key, issuer_url=public_url)
        if settings.issuer_key
        else EmbeddedIssuer.load_or_create(Path(settings.data_dir), issuer_url=public_url)
    )
    authenticator = build_authenticator(settings, issuer=issuer)
    store = store if store is not None else make_store(settings)
    # in-process, or NATS JetStream with SANDBOX_EVENTS_URL (several API replicas)
    bus = make_bus(settings)
    byos = ByosService(settings=settings)
    agent_env = agent_env_preview(settings, kube=kube)
    sessions = SessionsService(
        store=store,
        catalogue=offered_catalogue(settings),
        policy=sessions_policy(settings, kube=kube, agent_env=agent_env),
        bus=bus,
        credentials=byos,
    )
    uses_embedded = not (settings.oidc_issuer or settings.jwks_url)
    resources = ResourcesService(informer=SandboxInformer(store), sessions=sessions)
    sessions.cache = resources.informer  # lists from the informer's indexes (issue 11)
    # the model gateway's tokens, usage and budgets: this store's database (memory: memory)
    ledger = make_ledger(settings)
    # who did what (docs/api.md, "Audit"): this store's database too
    audit = make_audit_log(settings)
    # console sign-ins with the OIDC issuer (None without a client): this database too
    oidc = oidc_sessions_for(
        settings,
        cookie_secret=cookie_secret(settings),
        validate_bearer=authenticator.validator.validate,
    )
    # token cookies signed out of (POST /logout): checked in memory, kept in this
    # database too (auth/signouts.py), loaded before the first request
    signouts = signouts_for(settings)
    # each sandbox's MCP token (docs/mcp.md): signed by this issuer key whatever issuer
    # users sign in with, revoked with the live sandbox (the informer's copy)
    mcp_tokens = McpTokens(
        issuer,
        InformerLookup(store, resources.informer),
        url=settings.kube_mcp_url if kube else "",
    )
    return AppDeps(
        mcp_tokens=mcp_tokens,
        settings=settings,
        store=store,
        sessions=sessions,
        authenticator=authenticator,
        logins=LoginService(
            validate=authenticator.validator.validate,
            # links are minted by the embedded issuer only: tokens it signs would not
            # validate where an external issuer is trusted
            minter=issuer if uses_embedded else None,
            used=UsedLinks(data_dir / USED_FILE),
        ),
        cookie_secret=cookie_secret(settings),
        bus=bus,
        oidc_sessions=oidc,
        signouts=signouts,
        metrics_registry=CollectorRegistry(),
        issuer=issuer if uses_embedded else None,
        byos=byos,
        resources=resources,
        ledger=ledger,
        shares=SharesService(store=store, sessions=sessions),
        audit=audit,
        background=[
            *lifecycle_parts(bus),  # started first, stopped last
            LedgerLifecycle(ledger),
            audit,
            *([oidc] if oidc else []),
            signouts,
            resources,
        ],
        agent_env=agent_env,
    )


def build_embedded(
    settings: Settings, *, store: Store | None = None, public_url: str = ""
) -> AppDeps:
    """The all-in-one server: control plane, controller and terminals in this process."""
    # each sandbox's processes in a view of their own (issue 12), or said why not;
    # refuses to start unisolated with an external issuer (several users)
    isolation = decide_isolation(settings, path_env=agent_path(settings))
    announce_isolation(isolation)
    deps = build_control_plane(settings, store=store, public_url=public_url)
    deps.isolation = isolation
    # the model gateway under /llm/ (docs/gateway.md); each sandbox's terminals reach it
    # on this server's loopback address with the sandbox's own token
    ledger = embedded_ledger(deps, settings)
    deps.gateway = build_gateway(settings, ledger=ledger, registry=deps.metrics_registry)
    openai, anthropic = served_protocols(deps.gateway.config)
    tokens = SandboxTokens(ledger, openai=openai, anthropic=anthropic)
    deps.on_bound.append(tokens.listening)
    deps.on_bound.append(deps.mcp_tokens.listening)  # agents reach /mcp there too
    # agents a previous run left behind (killed with SIGKILL; SIGHUP ignored) end now
    groups = ProcessGroups(Path(settings.data_dir))
    groups.end_leftovers()
    registry = TerminalRegistry(
        catalogue=deps.sessions.catalogue,
        ring_bytes=settings.ring_buffer_bytes,
        scrollback_lines=settings.screen_scrollback_lines,
        path=agent_path(settings),
        groups=groups,
        isolation=isolation.policy,
        cgroups=isolation.cgroups,
    )
    terminal_metrics = TerminalMetrics(registry)
    deps.metrics_registry.register(terminal_metrics)
    terminals = TerminalsService(
        registry=registry,
        sessions=deps.sessions,
        settings=settings,
        credentials=deps.byos,
        pump=viewer_pump(metrics=terminal_metrics, window=settings.viewer_window_bytes),
        tokens=tokens,
        # each spawn: /mcp's URL and a fresh MCP token, named by the agents' MCP config
        mcp_tokens=deps.mcp_tokens,
    )
    deps.terminals = terminals
    # previews (preview.*): commands serving a port, run as the terminals' processes
    # are and proxied under /preview/ (docs/mcp.md, "Previews")
    previews = PreviewsService(
        registry, data_dir=Path(settings.data_dir), base_url=settings.public_url
    )
    deps.previews = previews
    deps.on_bound.append(previews.listening)
    add_accounts(deps, settings)  # access tokens and quotas (after the terminals)
    # the MCP tools' secrets and workspace index, removed with their sandbox
    add_sandbox_data(deps, settings, workspace=True)
    controller = EmbeddedController(
        deps.store,
        PreviewHost(  # a deleted sandbox's previews end before its terminals
            TerminalHostAdapter(
                registry,
                agent_problem=terminals.agent_problem,
                tokens=tokens,
                mcp_state=terminals.mcp_state,  # McpReady: /mcp is served by this process
            ),
            previews,
        ),
        data_dir=Path(settings.data_dir),
        git_base_url=settings.git_base_url,
        # the workspaces' sizes in status.storageUsed, flagged past quota.storage
        storage_interval=STORAGE_SECONDS,
    )
    terminals.on_agent_change = controller.requeue
    # the product's events (events.product): phases, terminal sessions, model usage
    events = Emitter(deps.bus)
    controller.on_phase = events.phase_changed
    terminals.events = events
    previews.events = events  # preview.started|stopped|exited
    deps.gateway.events = events
    # installs from the console; the registry finds them through agent_path()
    deps.agent_installs = AgentInstalls(
        data_dir=Path(settings.data_dir),
        catalogue=deps.sessions.catalogue,
        server_path=os.environ.get("PATH"),
    )
    # every terminal's busy/waiting/idle transition to SANDBOX_NOTIFY_WEBHOOK, if set
    webhook = attach_webhook(registry, settings.notify_webhook)
    deps.background = [
        # stopped last: the terminals' detaches are recorded while they stop
        deps.audit,
        controller,
        RegistryLifecycle(registry),
        previews,  # stopped before the terminals
        *([webhook] if webhook is not None else []),
        deps.agent_installs,
        *(part for part in deps.background if part is not deps.audit),
    ]
    # stopped before the ledger closes: it revokes the tokens this process handed out
    deps.background += [deps.gateway, tokens]
    attach_mcp(deps)
    return deps


BYOS_CLUSTER_MODE = (
    "Claude Code subscriptions are not available in cluster mode yet; sessions use the "
    "operator's LLM gateway or API key"
)


def build_api(settings: Settings, *, store: Store | None = None, public_url: str = "") -> AppDeps:
    """The stateless control plane of Kubernetes mode: terminals are proxied to each
    sandbox's terminal server; the operator (a separate process) reconciles."""
    deps = build_control_plane(settings, store=store, public_url=public_url, kube=True)
    add_accounts(deps, settings)  # access tokens and quotas
    # the MCP tools' secrets (the workspaces are in the pods: no index here)
    add_sandbox_data(deps, settings, workspace=False)
    deps.terminals = RemoteTerminals(
        store=deps.store,
        sessions=deps.sessions,
        url_template=settings.kube_pty_url_template,
        # share links: each attach is vouched for to the pod with a grant (docs/shares.md)
        share_grants=ShareGrantIssuer(settings.share_grant_secret)
        if settings.share_grant_secret
        else None,
    )
    # BYOS keeps its flows in memory and its tokens in the data dir, and only the
    # in-process spawner injects them: across API replicas and into sandbox pods none of
    # that holds, so cluster mode answers as if disabled rather than store tokens that
    # no session would use (docs/byos.md).
    deps.byos = ByosService(settings=settings, unavailable=BYOS_CLUSTER_MODE)
    if settings.byos_enabled and settings.byos_client_id_configured:
        log.warning("byos_unavailable_in_cluster_mode", detail=BYOS_CLUSTER_MODE)
    # k8s.read.* (docs/mcp.md, "Kubernetes reads"): each sandbox's workspace namespace,
    # within its Role, with this process's cluster identity (KUBECONFIG or in-cluster)
    if settings.store == "kube":
        deps.kube_reader = KubeReader()
        deps.background.append(deps.kube_reader)
    # previews (preview.*, the /preview/ proxy): wanted on the Sandbox, run by the
    # operator in the sandbox's pod, proxied to the port's Service (docs/mcp.md)
    deps.previews = KubePreviews(
        deps.store,
        informer=deps.resources.informer if deps.resources is not None else None,
        base_url=settings.public_url,
        url_template=settings.kube_preview_url_template,
    )
    deps.background.append(deps.previews)
    attach_mcp(deps)
    return deps


# --- the MCP server ----------------------------------------------------------------------


def mcp_services(deps: AppDeps) -> McpServices:
    """What the MCP tools reach in this server (a field left ``None`` is not served:
    its tools are not listed)."""
    resources = deps.resources
    return McpServices(
        settings=deps.settings,
        store=deps.store,
        sessions=deps.sessions,
        informer=resources.informer if resources is not None else None,
        terminals=deps.terminals,
        ledger=deps.ledger,
        bus=deps.bus,
        previews=getattr(deps, "previews", None),
        kube=getattr(deps, "kube_reader", None),
        workspace=deps.workspace_index,
        secrets=deps.sandbox_secrets,
        extra={"audit": deps.audit},
    )


def attach_mcp(deps: AppDeps) -> None:
    """The MCP server at /mcp (docs/mcp.md), stopped first when the server stops."""
    services = mcp_services(deps)
    # openova:// resources and their subscriptions (docs/mcp.md, "Live resources and
    # events"): started after the informer and the bus, stopped before them
    services.live = LiveResources(services)
    deps.mcp = McpServer(services, deps.mcp_tokens)
    deps.background += [services.live, deps.mcp]


# --- the model gateway -------------------------------------------------------------------


def gateway_config(settings: Settings) -> GatewayConfig:
    """``SANDBOX_LLM_CONFIG``, else the server's OPENAI_*/ANTHROPIC_* (zero config);
    raises LlmConfigError naming the file and field."""
    return load_gateway_config(
        settings.llm_config,
        env=os.environ,
        openai_base_url=settings.openai_base_url,
        openai_api_key=settings.openai_api_key,
        # LLM_GATEWAY_URL (an Anthropic-shaped gateway agents were once pointed at) is
        # now the built-in gateway's Anthropic upstream when ANTHROPIC_BASE_URL is unset
        anthropic_base_url=settings.anthropic_base_url or settings.llm_gateway_url,
        anthropic_api_key=settings.anthropic_api_key,
    )


def build_gateway(
    settings: Settings, *, ledger: GatewayLedger, registry: CollectorRegistry | None
) -> GatewayService:
    return GatewayService(gateway_config(settings), ledger, metrics=GatewayMetrics(registry))


def embedded_ledger(deps: AppDeps, settings: Settings) -> GatewayLedger:
    """The ledger the control plane assembled, else one in memory."""
    ledger: GatewayLedger | None = deps.ledger
    return ledger if ledger is not None else MemoryLedger(defaults=budget_defaults(settings))


def build_gateway_app(settings: Settings) -> Any:
    """``sandbox gateway``: the gateway alone, on the ledger of ``SANDBOX_STORE``
    (``SANDBOX_DATABASE_URL``). A database that does not answer at start does not stop
    it: /readyz is 503 and requests answer 503 until it does."""
    from .gateway_app import create_gateway_app

    if settings.store != "memory" and not settings.database_url:
        log.warning(
            "gateway_ledger_is_a_local_file",
            path=settings.effective_database_url,
            detail="tokens, usage and budgets are this process's own; set "
            "SANDBOX_DATABASE_URL to the database every replica and the API share",
        )
    registry = CollectorRegistry()
    ledger = make_ledger(settings)
    gateway = build_gateway(settings, ledger=ledger, registry=registry)
    lifecycle = LedgerLifecycle(ledger)
    on_start, on_stop = [lifecycle.start], [lifecycle.stop]
    if settings.events_url:  # usage.recorded for the API replicas (docs/mcp.md)
        bus = make_bus(settings)
        gateway.events = Emitter(bus)
        for part in lifecycle_parts(bus):
            on_start.insert(0, part.start)
            on_stop.append(part.stop)
    return create_gateway_app(gateway, registry=registry, on_start=on_start, on_stop=on_stop)
