"""Run the Kubernetes operator (the body of a ``sandbox operator`` command).

Standalone (no kopf peering): the Deployment runs one replica with the ``Recreate``
strategy, so two operators never reconcile at once; kopf's peering would need its own
CRDs in every cluster for no gain at one replica.
"""

from __future__ import annotations

import asyncio

import kopf

from ...config import Settings
from .handlers import OperatorOptions, build_registry
from .render import RenderConfig

_DEFAULTS = RenderConfig()


def render_config(settings: Settings) -> RenderConfig:
    """The renderer's choices from Settings. Fields the Settings object does not have yet
    (``kube_*``) keep the renderer's defaults, so this works before they are added."""

    def pick(name: str, default: str) -> str:
        value = getattr(settings, name, None)
        return str(value) if value else default

    return RenderConfig(
        image=pick("kube_image", _DEFAULTS.image),
        git_image=pick("kube_git_image", _DEFAULTS.git_image),
        repo_storage=pick("kube_repo_storage", _DEFAULTS.repo_storage),
        home_storage=pick("kube_home_storage", _DEFAULTS.home_storage),
        storage_class=pick("kube_storage_class", _DEFAULTS.storage_class),
        gateway_name=pick("kube_gateway_name", _DEFAULTS.gateway_name),
        gateway_namespace=pick("kube_gateway_namespace", _DEFAULTS.gateway_namespace),
        control_plane_namespace=pick(
            "kube_control_plane_namespace", _DEFAULTS.control_plane_namespace
        ),
        sandbox_host=pick("kube_sandbox_host", _DEFAULTS.sandbox_host),
        mcp_url=pick("kube_mcp_url", _DEFAULTS.mcp_url),
        git_base_url=settings.git_base_url,
        oidc_issuer=settings.oidc_issuer,
        jwks_url=settings.jwks_url,
        ring_buffer_bytes=settings.ring_buffer_bytes,
    )


async def run_operator(settings: Settings, *, stop_flag: asyncio.Event | None = None) -> None:
    """Watch Sandboxes in every namespace until ``stop_flag`` is set (or SIGTERM)."""
    registry = build_registry(OperatorOptions(render=render_config(settings)))
    await kopf.operator(
        registry=registry,
        clusterwide=True,
        standalone=True,
        stop_flag=stop_flag,
    )
