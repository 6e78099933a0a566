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
