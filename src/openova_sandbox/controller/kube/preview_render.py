"""A sandbox's preview port in Kubernetes (issue 14, ``preview.*``; docs/mcp.md,
"Previews"): the objects that make a port of the sandbox's pod reachable, rendered
(pure, as ``render.py``) and applied to or removed from its workspace namespace.

- Service ``preview-<port>``: the sandbox's terminal-server pod (``render.
  selector_labels``), that port.
- NetworkPolicy ``preview-<port>``: the workspace's policy (``sandbox-ingress``) admits
  only the terminal port; this one admits the preview port from the control plane's
  namespace, where the API's authenticated ``/preview/<sandbox>/<port>/`` proxy runs
  (:func:`upstream_url`), and, for a public preview only, from the gateway's and the
  data plane's namespaces.
- HTTPRoute ``preview-<port>``, for a **public** preview only: the sandbox's route
  hostname (``render.route_host``) and the path ``/preview/<sandbox>/<port>`` (rewritten
  to ``/``) to that Service. The Gateway API has no authentication of its own, so a
  route publishes the preview to anyone who has its URL: the preview-per-PR link for
  reviewers. Without ``public`` the preview is reached only through the API's proxy,
  signed in as the sandbox's owner.

Every object carries the sandbox's labels (the operator's child watches see them; its
reconcile neither wants nor prunes them) and ``openova.io/preview-port``.
"""

from __future__ import annotations

from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Service
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.types import PatchType

from ...domain.model import Sandbox
from .render import (
    JSON,
    RenderConfig,
    RenderError,
    _meta,
    _namespaces,
    route_host,
    selector_labels,
)

LABEL_PREVIEW_PORT = "openova.io/preview-port"
MIN_PORT = 1024
MAX_PORT = 65535
PATH_PREFIX = "/preview"
HTTP_ROUTE = create_namespaced_resource(
    "gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"
)


def preview_name(port: int) -> str:
    return f"preview-{port}"


def preview_path(sandbox: Sandbox, port: int) -> str:
    return f"{PATH_PREFIX}/{sandbox.name}/{port}"


def upstream_url(namespace: str, port: int) -> str:
    """Where the API's proxy reaches the preview: its Service's cluster address."""
    return f"http://{preview_name(port)}.{namespace}.svc:{port}"


def _check(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT:
        raise RenderError(f"preview port {port!r} is outside {MIN_PORT}-{MAX_PORT}")


def _preview_meta(sandbox: Sandbox, namespace: str, port: int) -> JSON:
    meta = _meta(sandbox, preview_name(port), namespace)
    meta["labels"][LABEL_PREVIEW_PORT] = str(port)
    return meta


def render_preview(
    sandbox: Sandbox, namespace: str, port: int, config: RenderConfig, *, public: bool = False
) -> list[JSON]:
    """The objects of ``port`` of ``sandbox`` in its workspace ``namespace``; a public
    preview also gets its HTTPRoute (``RenderError`` when routes are not rendered in
    this cluster: ``SANDBOX_KUBE_HTTP_ROUTE``)."""
    _check(port)
    if public and not config.http_route:
        raise RenderError(
            "a public preview needs an HTTPRoute, and this cluster renders none "
            "(SANDBOX_KUBE_HTTP_ROUTE, or no Gateway API)"
        )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _preview_meta(sandbox, namespace, port),
        "spec": {
            "selector": selector_labels(sandbox),
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }
    sources = {config.control_plane_namespace}
    if public:
        sources |= {config.gateway_namespace, *config.ingress_namespaces}
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _preview_meta(sandbox, namespace, port),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(sandbox)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [_namespaces(sources)], "ports": [{"protocol": "TCP", "port": port}]}
            ],
        },
    }
    objects: list[JSON] = [service, policy]
    if public:
        route: JSON = {
            "parentRefs": [{"name": config.gateway_name, "namespace": config.gateway_namespace}],
            "rules": [
                {
                    "matches": [
                        {"path": {"type": "PathPrefix", "value": preview_path(sandbox, port)}}
                    ],
                    "filters": [
                        {
                            "type": "URLRewrite",
                            "urlRewrite": {
                                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}
                            },
                        }
                    ],
                    "backendRefs": [{"name": preview_name(port), "port": port}],
                }
            ],
        }
        if config.sandbox_host:
            route["hostnames"] = [route_host(sandbox, config)]
        objects.append(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": _preview_meta(sandbox, namespace, port),
                "spec": route,
            }
        )
    return objects


_CLASSES: dict[str, Any] = {
    "Service": Service,
    "NetworkPolicy": NetworkPolicy,
    "HTTPRoute": HTTP_ROUTE,
}


async def apply_preview(client: AsyncClient, objects: list[JSON]) -> None:
    """Create each object, or bring an existing one to what was rendered (merge patch)."""
    for obj in objects:
        res = _CLASSES[obj["kind"]]
        meta = obj["metadata"]
        try:
            await client.create(res.from_dict(dict(obj)))
            continue
        except ApiError as exc:
            if exc.status.code != 409:
                raise
        patch = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        await client.patch(
            res, meta["name"], patch, namespace=meta["namespace"], patch_type=PatchType.MERGE
        )


async def remove_preview(client: AsyncClient, namespace: str, port: int) -> None:
    """Delete the preview's objects (those that are there)."""
    for res in _CLASSES.values():
        try:
            await client.delete(res, preview_name(port), namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
