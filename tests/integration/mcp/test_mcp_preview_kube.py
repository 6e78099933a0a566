"""A preview port's Kubernetes objects (controller/kube/preview_render.py): Service and
NetworkPolicy valid against the Kubernetes schemas (``kubernetes-validate``, strict:
unknown fields are errors, as tests/kube/test_render.py checks the sandbox's children),
the public preview's HTTPRoute against the Gateway API v1 fields it uses (no PyPI
package ships that schema: the subset below, closed), and applied to, updated in and
removed from a workspace namespace of the fake API server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Service
from lightkube.resources.networking_v1 import NetworkPolicy

from openova_sandbox.controller.kube.preview_render import (
    HTTP_ROUTE,
    LABEL_PREVIEW_PORT,
    apply_preview,
    remove_preview,
    render_preview,
    upstream_url,
)
from openova_sandbox.controller.kube.render import RenderConfig, RenderError, render_children
from openova_sandbox.domain.model import ANNOTATION_SUB, ObjectMeta, Sandbox, SandboxSpec
from openova_sandbox.testing.kubeapi import FakeKube, run_fake_kube

K8S_VERSION = "1.30.0"
WS = "sandbox-ada-at-acme-com"
CONFIG = RenderConfig(
    sandbox_host="{org}.sandbox.example.com", ingress_namespaces=("envoy-gateway-system",)
)
SANDBOX = Sandbox(
    metadata=ObjectMeta(
        name="alpha", namespace="acme", uid="u-1", annotations={ANNOTATION_SUB: "sub-ada"}
    ),
    spec=SandboxSpec(owner_email="ada@acme.com", org_slug="acme"),
)

_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
# Gateway API v1 HTTPRoute, the fields a preview's route uses (gateway-api v1.1
# standard channel, apis/v1/httproute_types.go); closed: anything else is an error
HTTP_ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["parentRefs", "rules"],
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {"name": _NAME, "namespace": _NAME},
                    },
                },
                "hostnames": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "string",
                        "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                    },
                },
                "rules": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "matches": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "path": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "type": {
                                                    "enum": [
                                                        "Exact",
                                                        "PathPrefix",
                                                        "RegularExpression",
                                                    ]
                                                },
                                                "value": {
                                                    "type": "string",
                                                    "pattern": "^/",
                                                    "maxLength": 1024,
                                                },
                                            },
                                        }
                                    },
                                },
                            },
                            "filters": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["type"],
                                    "properties": {
                                        "type": {"const": "URLRewrite"},
                                        "urlRewrite": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "path": {
                                                    "type": "object",
                                                    "additionalProperties": False,
                                                    "required": ["type", "replacePrefixMatch"],
                                                    "properties": {
                                                        "type": {"const": "ReplacePrefixMatch"},
                                                        "replacePrefixMatch": {
                                                            "type": "string",
                                                            "pattern": "^/",
                                                        },
                                                    },
                                                }
                                            },
                                        },
                                    },
                                },
                            },
                            "backendRefs": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name", "port"],
                                    "properties": {
                                        "name": _NAME,
                                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def by_kind(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objs}


def test_a_private_preview_is_a_service_reached_from_the_control_plane_only() -> None:
    objs = by_kind(render_preview(SANDBOX, WS, 8000, CONFIG))
    assert sorted(objs) == ["NetworkPolicy", "Service"]  # no route: only the API's proxy
    for obj in objs.values():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert obj["metadata"]["namespace"] == WS
        assert obj["metadata"]["name"] == "preview-8000"
        assert obj["metadata"]["labels"][LABEL_PREVIEW_PORT] == "8000"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "openova-sandbox"
    service = objs["Service"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": 8000, "protocol": "TCP"}
    ]
    # it selects the sandbox's own pod: the StatefulSet's template labels
    sts = next(o for o in render_children(SANDBOX, WS, CONFIG) if o["kind"] == "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    rule = objs["NetworkPolicy"]["spec"]["ingress"][0]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    sources = rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert sources == ["catalyst-system"]
    assert upstream_url(WS, 8000) == f"http://preview-8000.{WS}.svc:8000"


def test_a_public_preview_gets_a_route_on_the_sandbox_host() -> None:
    objs = by_kind(render_preview(SANDBOX, WS, 3000, CONFIG, public=True))
    assert sorted(objs) == ["HTTPRoute", "NetworkPolicy", "Service"]
    for kind in ("Service", "NetworkPolicy"):
        kubernetes_validate.validate(objs[kind], K8S_VERSION, strict=True)
    route = objs["HTTPRoute"]
    jsonschema.validate(route, HTTP_ROUTE_SCHEMA)
    assert route["spec"]["hostnames"] == ["acme.sandbox.example.com"]
    assert route["spec"]["parentRefs"] == [
        {"name": "catalyst-gateway", "namespace": "catalyst-system"}
    ]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/preview/alpha/3000"}}]
    assert rule["backendRefs"] == [{"name": "preview-3000", "port": 3000}]
    assert rule["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"] == "/"
    sources = objs["NetworkPolicy"]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]
    assert sources["matchExpressions"][0]["values"] == [
        "catalyst-system",
        "envoy-gateway-system",
    ]  # the gateway's namespace is the control plane's here


def test_the_route_schema_check_is_not_vacuous() -> None:
    route = by_kind(render_preview(SANDBOX, WS, 3000, CONFIG, public=True))["HTTPRoute"]
    route["spec"]["rules"][0]["backendRefs"][0]["weight2"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(route, HTTP_ROUTE_SCHEMA)
    service = by_kind(render_preview(SANDBOX, WS, 3000, CONFIG))["Service"]
    service["spec"]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSION, strict=True)


@pytest.mark.parametrize("port", [80, 0, 65536, "8000", True])
def test_ports_outside_the_range_are_not_rendered(port: Any) -> None:
    with pytest.raises(RenderError, match="outside 1024-65535"):
        render_preview(SANDBOX, WS, port, CONFIG)


def test_a_public_preview_needs_routes() -> None:
    no_routes = RenderConfig(http_route=False)
    with pytest.raises(RenderError, match="needs an HTTPRoute"):
        render_preview(SANDBOX, WS, 3000, no_routes, public=True)
    assert len(render_preview(SANDBOX, WS, 3000, no_routes)) == 2


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with run_fake_kube(namespaces=("acme", WS)) as server:
        yield server


async def test_applied_updated_and_removed_in_the_workspace(kube: FakeKube) -> None:
    client = AsyncClient(config=KubeConfig.from_file(str(kube.kubeconfig_path)), trust_env=False)
    try:
        await apply_preview(client, render_preview(SANDBOX, WS, 8000, CONFIG))
        service = await client.get(Service, "preview-8000", namespace=WS)
        assert service.spec is not None and service.spec.ports is not None
        assert service.spec.ports[0].port == 8000
        with pytest.raises(ApiError) as missing:
            await client.get(HTTP_ROUTE, "preview-8000", namespace=WS)
        assert missing.value.status.code == 404

        # made public: the existing objects brought up to date, the route created
        await apply_preview(client, render_preview(SANDBOX, WS, 8000, CONFIG, public=True))
        policy = await client.get(NetworkPolicy, "preview-8000", namespace=WS)
        assert policy.spec is not None and policy.spec.ingress is not None
        sources = policy.spec.ingress[0].from_[0].namespaceSelector.matchExpressions[0].values  # type: ignore[index,union-attr]
        assert sources == ["catalyst-system", "envoy-gateway-system"]
        route = await client.get(HTTP_ROUTE, "preview-8000", namespace=WS)
        assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "preview-8000", "port": 8000}]

        await remove_preview(client, WS, 8000)
        await remove_preview(client, WS, 8000)  # nothing left: not an error
        for res in (Service, NetworkPolicy, HTTP_ROUTE):
            with pytest.raises(ApiError) as gone:
                await client.get(res, "preview-8000", namespace=WS)
            assert gone.value.status.code == 404
    finally:
        await client.close()
