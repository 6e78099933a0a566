"""Assembling the embedded all-in-one server from Settings.

The one place that knows which concrete store, authenticator, bus and background parts
an embedded `sandbox serve` uses. Tests build the same thing with their own settings
(see ``openova_sandbox.testing``).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry

from ..auth.authenticator import build_authenticator
from ..auth.issuer import EmbeddedIssuer
from ..config import Settings
from ..controller.runner import EmbeddedController
from ..domain.catalogue import Catalogue, load_catalogue
from ..domain.model import Quota
from ..events.bus import InProcessBus
from ..services.byos import ByosService
from ..services.logins import LoginService
from ..services.remote_terminals import RemoteTerminals
from ..services.resources import SandboxInformer
from ..services.resources_view import ResourcesService
from ..services.sessions import SessionsPolicy, SessionsService
from ..services.terminals import TerminalHostAdapter, TerminalsService
from ..store.base import Store
from ..store.factory import make_store
from ..terminal.metrics import TerminalMetrics
from ..terminal.registry import TerminalRegistry
from .deps import AppDeps

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
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


def offered_catalogue(settings: Settings) -> Catalogue:
    """The catalogue, narrowed to ``SANDBOX_AGENTS`` when set; a name that is not in it
    is logged (and offers nothing) rather than stopping the server."""
    catalogue = load_catalogue(settings.agents_path)
    unknown = sorted(set(settings.agents) - set(catalogue.api_slugs))
    if unknown:
        log.warning("agents_not_in_catalogue", unknown=unknown, offered=catalogue.api_slugs)
    return catalogue.narrowed(settings.agents)


def build_control_plane(
    settings: Settings, *, store: Store | None = None, public_url: str = ""
) -> AppDeps:
    """Everything both modes share: store, auth, sessions, logins, BYOS, resources.
    Terminals and background parts are added by the mode (see below)."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    issuer = EmbeddedIssuer.load_or_create(Path(settings.data_dir), issuer_url=public_url)
    authenticator = build_authenticator(settings, issuer=issuer)
    store = store if store is not None else make_store(settings)
    bus = InProcessBus()
    sessions = SessionsService(
        store=store,
        catalogue=offered_catalogue(settings),
        policy=SessionsPolicy(
            default_namespace=settings.default_namespace,
            quota=Quota.from_dict(settings.quota_dict),
        ),
        bus=bus,
    )
    uses_embedded = not (settings.oidc_issuer or settings.jwks_url)
    resources = ResourcesService(informer=SandboxInformer(store), sessions=sessions)
    return AppDeps(
        settings=settings,
        store=store,
        sessions=sessions,
        authenticator=authenticator,
        logins=LoginService(validate=authenticator.validator.validate, minter=issuer),
        cookie_secret=cookie_secret(settings),
        bus=bus,
        metrics_registry=CollectorRegistry(),
        issuer=issuer if uses_embedded else None,
        byos=ByosService(settings=settings),
        resources=resources,
        background=[resources],
    )


def build_embedded(
    settings: Settings, *, store: Store | None = None, public_url: str = ""
) -> AppDeps:
    """The all-in-one server: control plane, controller and terminals in this process."""
    deps = build_control_plane(settings, store=store, public_url=public_url)
    registry = TerminalRegistry(
        catalogue=deps.sessions.catalogue, ring_bytes=settings.ring_buffer_bytes
    )
    terminal_metrics = TerminalMetrics(registry)
    deps.metrics_registry.register(terminal_metrics)
    deps.terminals = TerminalsService(
        registry=registry,
        sessions=deps.sessions,
        settings=settings,
        credentials=deps.byos,
        metrics=terminal_metrics,
    )
    controller = EmbeddedController(
        deps.store,
        TerminalHostAdapter(registry),
        data_dir=Path(settings.data_dir),
        git_base_url=settings.git_base_url,
    )
    deps.background = [controller, RegistryLifecycle(registry), *deps.background]
    return deps


BYOS_CLUSTER_MODE = (
    "Claude Code subscriptions are not available in cluster mode yet; sessions use the "
    "operator's LLM gateway or API key"
)


def build_api(settings: Settings, *, store: Store | None = None, public_url: str = "") -> AppDeps:
    """The stateless control plane of Kubernetes mode: terminals are proxied to each
    sandbox's terminal server; the operator (a separate process) reconciles."""
    deps = build_control_plane(settings, store=store, public_url=public_url)
    deps.terminals = RemoteTerminals(
        store=deps.store, sessions=deps.sessions, url_template=settings.kube_pty_url_template
    )
    # BYOS keeps its flows in memory and its tokens in the data dir, and only the
    # in-process spawner injects them: across API replicas and into sandbox pods none of
    # that holds, so cluster mode answers as if disabled rather than store tokens that
    # no session would use (docs/byos.md).
    deps.byos = ByosService(settings=settings, unavailable=BYOS_CLUSTER_MODE)
    if settings.byos_enabled and settings.byos_client_id_configured:
        log.warning("byos_unavailable_in_cluster_mode", detail=BYOS_CLUSTER_MODE)
    return deps
