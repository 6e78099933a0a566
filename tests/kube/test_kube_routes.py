"""Routes (issue 13): the HTTPRoute's hostname per org, and the route optional — on a
cluster without the Gateway API a sandbox still becomes Ready (the API proxies its
terminals), with condition RouteReady saying the route was skipped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube import AsyncClient, KubeConfig

from openova_sandbox.config import load_settings
from openova_sandbox.controller.kube.operator import gateway_api_installed, render_config
from openova_sandbox.controller.kube.reconcile import reconcile
from openova_sandbox.controller.kube.render import (
    RenderConfig,
    RenderError,
    render_children,
)
from openova_sandbox.testing.kubeapi import FakeKube, run_fake_kube

from .samples import NOW, sandbox
from .test_operator import NS, SB, OperatorThread, sandbox_body, wait_for

CRD = Path(__file__).parents[2] / "deploy" / "crds" / "sandboxes.sandbox.openova.io.yaml"
GIT = "https://gitea.example.com"


def route_of(objs: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((o for o in objs if o["kind"] == "HTTPRoute"), None)


def test_a_sandbox_name_in_two_orgs_gets_two_hostnames() -> None:
    config = RenderConfig(git_base_url=GIT, sandbox_host="{namespace}.sandbox.example.com")
    hosts = set()
    for org in ("acme", "globex"):
        sb = sandbox(name="dev", namespace=org, org=org, email=f"dev@{org}.com", repos=())
        route = route_of(render_children(sb, "ws", config))
        assert route is not None
        hosts.add(tuple(route["spec"]["hostnames"]))
    assert hosts == {("acme.sandbox.example.com",), ("globex.sandbox.example.com",)}
    org = RenderConfig(git_base_url=GIT, sandbox_host="{org}.example.com")
    route = route_of(render_children(sandbox(repos=()), "ws", org))
    assert route is not None and route["spec"]["hostnames"] == ["acme.example.com"]


def test_a_host_that_is_no_dns_name_fails_the_render() -> None:
    config = RenderConfig(git_base_url=GIT, sandbox_host="{namespace}_x.example.com")
    with pytest.raises(RenderError, match="SANDBOX_KUBE_SANDBOX_HOST"):
        render_children(sandbox(), "ws", config)


def test_without_routes_there_is_no_httproute_and_route_ready_is_skipped() -> None:
    config = RenderConfig(git_base_url=GIT, http_route=False)
    assert route_of(render_children(sandbox(), "ws", config)) is None
    plan = reconcile(sandbox(), _nothing(), NOW, config)
    assert plan.status is not None
    route = next(c for c in plan.status.conditions if c.type == "RouteReady")
    assert (route.status, route.reason) == ("True", "Skipped")
    with_routes = reconcile(sandbox(), _nothing(), NOW, RenderConfig(git_base_url=GIT))
    assert with_routes.status is not None
    assert [c.status for c in with_routes.status.conditions if c.type == "RouteReady"] != ["True"]


def _nothing() -> Any:
    from openova_sandbox.controller.kube.reconcile import KubeObserved

    return KubeObserved()


def test_settings_choose_routes() -> None:
    assert render_config(load_settings(kube_http_route="off")).http_route is False
    assert render_config(load_settings(kube_http_route="on")).http_route is True


@pytest.fixture
def no_gateway_api() -> Iterator[FakeKube]:
    with run_fake_kube(
        crds=[CRD], namespaces=("default", "acme", "catalyst-system"), gateway_api=False
    ) as server:
        yield server


async def _installed(kube: FakeKube) -> bool:
    config = KubeConfig.from_file(kube.kubeconfig_path)
    client = AsyncClient(config=config, trust_env=False)
    try:
        return await gateway_api_installed(client, "catalyst-system")
    finally:
        await client.close()


def test_the_operator_tells_whether_the_gateway_api_is_installed(
    kube: FakeKube, no_gateway_api: FakeKube
) -> None:
    assert asyncio.run(_installed(kube)) is True
    assert asyncio.run(_installed(no_gateway_api)) is False


def test_without_the_gateway_api_a_sandbox_becomes_ready(
    no_gateway_api: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = no_gateway_api
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    with OperatorThread(metrics_port=None), httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
        wait_for(
            lambda: (
                http.get(f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server").status_code
                == 200
            )
        )
        kube.set_ready_replicas(NS, "pty-server", 1)

        def status() -> dict[str, Any]:
            return dict(http.get(f"{SB}/alpha").json().get("status") or {})

        wait_for(lambda: status().get("phase") == "Ready")
        conditions = {c["type"]: c for c in status()["conditions"]}
        assert conditions["RouteReady"]["reason"] == "Skipped"
        assert conditions["Ready"]["status"] == "True"
        # asked once, at start (404); never again, and no route was written
        asked = [(m, path) for m, path in kube.requests if "httproutes" in path]
        assert asked == [
            ("GET", "/apis/gateway.networking.k8s.io/v1/namespaces/catalyst-system/httproutes")
        ]
