"""Run the Kubernetes operator (the body of a ``sandbox operator`` command).

Two replicas run for availability; a Lease (``leader.py``) decides which one acts. kopf
itself runs standalone (no kopf peering, which needs kopf's own CRDs) and only while
this replica holds the lease: ``kopf.operator`` is started on acquiring and stopped
through its ``stop_flag`` on losing it, so the follower does not even watch. kopf is
stopped *before* the lease can expire for anyone else (renew deadline < duration).

Metrics are served on their own port from the start, leader or not (the
``sandbox_operator_leader`` gauge says which), with ``/healthz`` for the liveness probe:
it fails when the event loop has not beaten for 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import kopf
import structlog
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource

from ...config import Settings, claim_mapping_env
from ...domain.share_grant import check_secret
from ..ports import McpTokenSource, TokenLedger
from .gateway_token import open_ledger
from .handlers import OperatorOptions, build_registry
from .leader import ElectionTiming, LeaseElector
from .metrics import HEARTBEAT_SECONDS, OperatorMetrics
from .render import RenderConfig

log = structlog.get_logger(__name__)
HTTPRouteResource = create_namespaced_resource(
    "gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"
)

# where the API publishes its embedded issuer's keys (auth.issuer.JWKS_PATH; the
# controller layer does not reach up into auth)
JWKS_PATH = "/.well-known/jwks.json"


def pod_jwks_url(settings: Settings) -> str:
    """Where a sandbox pod's terminal server finds the keys of the tokens it admits: the
    external issuer's (``SANDBOX_JWKS_URL``, else discovered from
    ``SANDBOX_OIDC_ISSUER``), or, without one, the API's shared embedded issuer
    (``SANDBOX_ISSUER_KEY``) at ``SANDBOX_KUBE_API_URL``."""
    if settings.jwks_url or settings.oidc_issuer:
        return settings.jwks_url
    return settings.kube_api_url.rstrip("/") + JWKS_PATH


def pod_audience(settings: Settings) -> tuple[str, str]:
    """The audiences a sandbox pod's terminal server checks: the control plane's
    ``SANDBOX_OIDC_AUDIENCE`` and its console client ``SANDBOX_OIDC_CLIENT_ID`` (the
    ``aud`` of the ID tokens it relays for console sessions), with an external issuer
    only: the embedded issuer's tokens are not checked for an audience by the control
    plane either (docs/auth.md, "Kubernetes mode's sandbox pods")."""
    if not (settings.oidc_issuer or settings.jwks_url) or not settings.oidc_audience:
        return "", ""
    return settings.oidc_audience, settings.oidc_client_id


def startup_problems(settings: Settings) -> list[str]:
    """What ``sandbox operator`` lacks to give sandboxes a working terminal; each
    names its setting. Empty: nothing lacks."""
    problems = []
    if not settings.database_url:
        problems.append(
            "no SANDBOX_DATABASE_URL (the model gateway's database, Secret "
            "sandbox-gateway-db): sandbox pods would get no model-gateway token"
        )
    base = settings.git_base_url.strip()
    if base and urlsplit(base).scheme not in {"http", "https", "ssh"}:
        problems.append(f"SANDBOX_GIT_BASE_URL {base!r} is not an absolute http(s) or ssh URL")
    return problems


def render_config(settings: Settings) -> RenderConfig:
    """The renderer's choices from Settings (env ``SANDBOX_KUBE_*``)."""
    return RenderConfig(
        image=settings.kube_image,
        git_image=settings.kube_git_image,
        repo_storage=settings.kube_repo_storage,
        home_storage=settings.kube_home_storage,
        storage_class=settings.kube_storage_class,
        gateway_name=settings.kube_gateway_name,
        gateway_namespace=settings.kube_gateway_namespace,
        control_plane_namespace=settings.kube_control_plane_namespace,
        sandbox_host=settings.kube_sandbox_host,
        mcp_url=settings.kube_mcp_url,
        git_base_url=settings.git_base_url,
        oidc_issuer=settings.oidc_issuer,
        jwks_url=pod_jwks_url(settings),
        oidc_audience=pod_audience(settings)[0],
        oidc_client_id=pod_audience(settings)[1],
        claim_mapping=claim_mapping_env(settings),
        ring_buffer_bytes=settings.ring_buffer_bytes,
        default_namespace=settings.default_namespace,
        mcp_needs_token=settings.kube_mcp_needs_token,
        model_gateway_url=settings.kube_model_gateway_url,
        model_gateway_token=bool(settings.database_url),
        share_grants=bool(settings.share_grant_secret),
        request_percent=settings.kube_request_percent,
        tmp_size=settings.kube_tmp_size,
        ephemeral_storage=settings.kube_ephemeral_storage,
        ingress_namespaces=settings.kube_ingress_namespaces,
        http_route=settings.kube_http_route != "off",
    )


async def gateway_api_installed(client: AsyncClient, namespace: str) -> bool:
    """Whether the cluster serves HTTPRoutes (``gateway.networking.k8s.io/v1``): a 404
    on listing them says no; any other answer (or none) says yes, and a missing kind
    then shows as a failed route create, retried."""
    try:
        async for _ in client.list(HTTPRouteResource, namespace=namespace, chunk_size=1):
            break
    except ApiError as exc:
        if int(exc.status.code or 0) == 404:
            return False
        log.warning("gateway_api_check_failed", error=str(exc))
    except Exception as exc:  # unreachable now: the first create decides
        log.warning("gateway_api_check_failed", error=str(exc))
    return True


def kopf_scope(namespace: str | None) -> dict[str, object]:
    """kopf's watch scope: every namespace, or just ``namespace``. Workspace namespaces
    are cluster-scoped objects and are created either way."""
    if namespace:
        return {"clusterwide": False, "namespaces": [namespace]}
    return {"clusterwide": True}


def _install_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT end the campaign; while leading, kopf installs its own handlers
    (and its return then ends the process the same way)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def run_operator(
    settings: Settings,
    *,
    namespace: str | None = None,
    metrics_port: int | None = 8081,
    metrics_addr: str = "0.0.0.0",
    stop_flag: asyncio.Event | None = None,
    identity: str | None = None,
    timing: ElectionTiming | None = None,
    client_factory: Callable[[], AsyncClient] | None = None,
    metrics: OperatorMetrics | None = None,
    ledger_factory: Callable[[Settings], TokenLedger] | None = None,
    mcp_tokens: McpTokenSource | None = None,
) -> None:
    """Campaign for the lease and reconcile Sandboxes while holding it, until
    ``stop_flag`` is set or SIGTERM. ``namespace`` narrows the watch to one namespace;
    ``metrics_port`` None serves no metrics (0: any free port)."""
    stop = stop_flag or asyncio.Event()
    metrics = metrics or OperatorMetrics()
    server = None
    if metrics_port is not None:
        server = metrics.serve(metrics_port, addr=metrics_addr)
        log.info("operator_metrics_serving", port=metrics.port)
    if settings.share_grant_secret:
        check_secret(settings.share_grant_secret)  # too short: refuse to start
    # each sandbox's gateway token (gateway_token.py)
    ledger = open_ledger(settings, ledger_factory)
    render = render_config(settings)
    if mcp_tokens is not None and settings.kube_mcp_url:
        # each sandbox's MCP token Secret (mcp_token.py), read by its pod
        render = dataclasses.replace(render, mcp_token=True)
    else:
        mcp_tokens = None
    if settings.kube_http_route == "auto":
        client = (client_factory or AsyncClient)()
        try:
            installed = await gateway_api_installed(client, settings.kube_control_plane_namespace)
        finally:
            await client.close()
        render = dataclasses.replace(render, http_route=installed)
        log.info(
            "operator_http_routes",
            enabled=installed,
            detail="Gateway API installed"
            if installed
            else "Gateway API not installed: "
            "no HTTPRoutes (condition RouteReady: Skipped); restart after installing it",
        )
    options = OperatorOptions(
        render=render,
        metrics=metrics,
        pty_url_template=settings.kube_pty_url_template,
        ledger=ledger,
        share_grant_secret=settings.share_grant_secret,
        mcp_tokens=mcp_tokens,
        # with --namespace the workspace namespaces are not watched: nothing to cache
        informer_cache=namespace is None,
    )
    registry = build_registry(options, client_factory=client_factory)
    scope = kopf_scope(namespace)

    async def lead(lost: asyncio.Event) -> None:
        kopf_stop = asyncio.Event()

        async def relay() -> None:
            await lost.wait()
            kopf_stop.set()

        relay_task = asyncio.create_task(relay())
        try:
            await kopf.operator(
                registry=registry,
                standalone=True,
                stop_flag=kopf_stop,
                **scope,  # type: ignore[arg-type]
            )
        finally:
            relay_task.cancel()
            _install_signals(stop)  # kopf's handlers pointed at its own, finished run
        if not lost.is_set():
            stop.set()  # kopf ended by itself (a signal): the process ends

    elector = LeaseElector(
        client_factory or AsyncClient,
        namespace=settings.kube_control_plane_namespace,
        identity=identity,
        timing=timing,
        on_change=lambda leading: metrics.leader.set(1 if leading else 0),
    )
    log.info(
        "operator_starting",
        identity=elector.identity,
        lease_namespace=elector.namespace,
        watch_namespace=namespace or "*",
    )
    _install_signals(stop)

    async def heartbeat() -> None:
        while True:
            metrics.beat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    beating = asyncio.create_task(heartbeat())
    try:
        await elector.run(lead, stop)
    finally:
        beating.cancel()
        if ledger is not None:
            await ledger.close()
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
