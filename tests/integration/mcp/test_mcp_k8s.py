"""``k8s.read.*`` (issue 14) against the fake API server: the sandbox's own workspace
namespace only, the kinds its Role grants only (no Secrets), bounded answers.

The reader runs as the sandbox's own ServiceAccount (a token the fake authorizes with
its RBAC: the ClusterRole of deploy/kubernetes/rbac-workspace.yaml bound by the rendered
RoleBinding), so everything the tools serve is also what the API server lets that Role
read; the sandbox comes from the Kubernetes store through the sessions service.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api
from openova_sandbox.api.deps import AppDeps
from openova_sandbox.config import load_settings
from openova_sandbox.controller.kube.render import RenderConfig, render_children
from openova_sandbox.domain.errors import Conflict, Forbidden, Invalid, NotFound
from openova_sandbox.domain.model import ANNOTATION_SUB, ObjectMeta, Sandbox, SandboxSpec
from openova_sandbox.mcp.capabilities import Grant
from openova_sandbox.mcp.tools import k8s as k8s_tools
from openova_sandbox.mcp.tools.base import McpCaller, McpServices, ToolContext
from openova_sandbox.services.kube_read import MAX_LIST, KubeReader
from openova_sandbox.serving import UVICORN_OPTIONS, Server
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube, run_fake_kube
from openova_sandbox.testing.kubeapi_rbac import User
from openova_sandbox.testing.server import free_port

ROOT = Path(__file__).parents[3]
CRD = ROOT / "deploy" / "crds" / "sandboxes.sandbox.openova.io.yaml"
WORKSPACE_ROLE = ROOT / "deploy" / "kubernetes" / "rbac-workspace.yaml"
WS = "sandbox-ada-at-acme-com"
OTHER_WS = "sandbox-bob-at-acme-com"
TOOLS = {t.name: t for t in k8s_tools.TOOLS}
SA_TOKEN = "sandbox-sa-token"  # the sandbox's ServiceAccount, to the fake's RBAC


def pod(name: str, namespace: str, containers: tuple[str, ...] = ("pty-server",)) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"containers": [{"name": c, "image": "busybox"} for c in containers]},
    }


def event(name: str, about: str, reason: str, at: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": WS},
        "involvedObject": {"kind": "Pod", "name": about, "namespace": WS},
        "reason": reason,
        "message": f"{reason} {about}",
        "type": "Normal",
        "lastTimestamp": at,
    }


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with run_fake_kube(crds=[CRD], namespaces=("acme", WS, OTHER_WS)) as server:
        yield server


@dataclasses.dataclass
class World:
    kube: FakeKube
    deps: AppDeps
    reader: KubeReader
    sandbox: Sandbox
    sa_config: Path  # a kubeconfig of the sandbox's ServiceAccount

    def ctx(self, **services: Any) -> ToolContext:
        caller = McpCaller(
            namespace="acme",
            sandbox=self.sandbox.name,
            uid=self.sandbox.metadata.uid,
            owner_sub="sub-ada",
            owner_email="ada@acme.com",
            org="acme",
            grant=Grant(("*",)),
        )
        base = {"sessions": self.deps.sessions, "kube": self.reader}
        return ToolContext(caller, McpServices(settings=self.deps.settings, **{**base, **services}))


async def call(world: World, tool: str, **args: Any) -> Any:
    result = await TOOLS[tool].handler(world.ctx(), args)
    json.dumps(result)  # what the server sends: JSON-able
    return result


@pytest.fixture
async def world(kube: FakeKube, tmp_path: Path) -> AsyncIterator[World]:
    settings = load_settings(data_dir=tmp_path / "data", store="kube")
    deps = build_api(settings, store=KubeStore(kubeconfig_path=str(kube.kubeconfig_path)))
    await deps.store.start()
    made = await deps.store.create(
        Sandbox(
            metadata=ObjectMeta(
                name="alpha", namespace="acme", annotations={ANNOTATION_SUB: "sub-ada"}
            ),
            spec=SandboxSpec(owner_email="ada@acme.com", org_slug="acme"),
        )
    )
    status = dataclasses.replace(made.status, extra={"workspaceNamespace": WS})
    made = await deps.store.update_status(dataclasses.replace(made, status=status))
    # the sandbox's access, as the operator renders it, and the pre-made ClusterRole
    kube.apply(yaml.safe_load(WORKSPACE_ROLE.read_text()))
    for child in render_children(made, WS, RenderConfig()):
        if child["kind"] in ("ServiceAccount", "RoleBinding"):
            kube.apply(child)
    # what runs in the workspace, a Secret, and a pod of another sandbox's
    kube.apply(pod("pty-server-0", WS))
    kube.apply(pod("two-0", WS, containers=("app", "sidecar")))
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "pty-server", "namespace": WS},
            "spec": {"ports": [{"name": "http", "port": 7681, "targetPort": 7681}]},
        }
    )
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "big", "namespace": WS},
            "data": {"small": "x", "large": "y" * 40_000},
        }
    )
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "sandbox-gateway-token", "namespace": WS},
            "stringData": {"token": "sk-never-shown"},
        }
    )
    kube.apply(pod("bob-0", OTHER_WS))
    for i, (about, reason, at) in enumerate(
        [
            ("pty-server-0", "Scheduled", "2026-01-01T10:00:00Z"),
            ("pty-server-0", "Started", "2026-01-01T10:00:05Z"),
            ("two-0", "Pulled", "2026-01-01T10:00:03Z"),
        ]
    ):
        kube.apply(event(f"ev-{i}", about, reason, at))
    kube.set_pod_log(
        WS, "pty-server-0", "pty-server", "".join(f"line {i}\n" for i in range(1, 301))
    )
    kube.set_pod_log(WS, "two-0", "sidecar", "sidecar says hi\n")
    config = kube.add_user(SA_TOKEN, User.service_account(WS, "sandbox"))
    reader = KubeReader.from_config(str(config))
    try:
        yield World(kube, deps, reader, made, config)
    finally:
        await reader.close()
        await deps.store.close()


async def test_get_and_list_read_the_workspace_within_the_role(world: World) -> None:
    got = await call(world, "k8s.read.get", kind="Pod", name="pty-server-0")
    assert got["metadata"]["namespace"] == WS
    assert got["spec"]["containers"][0]["name"] == "pty-server"
    assert "managedFields" not in got["metadata"]

    pods = await call(world, "k8s.read.list", kind="pods")
    assert pods["namespace"] == WS
    assert sorted(p["name"] for p in pods["items"]) == ["pty-server-0", "two-0"]  # never bob's
    assert {p["name"]: p["containers"] for p in pods["items"]}["two-0"] == ["app", "sidecar"]
    only = await call(world, "k8s.read.list", kind="Pod", labels={"app": "two-0"})
    assert [p["name"] for p in only["items"]] == ["two-0"]
    services = await call(world, "k8s.read.list", kind="Service")
    assert services["items"][0]["ports"][0]["port"] == 7681
    one = await call(world, "k8s.read.list", kind="Pod", limit=1)
    assert len(one["items"]) == 1 and one["more"] is True

    big = await call(world, "k8s.read.get", kind="ConfigMap", name="big")
    assert big["data"]["small"] == "x"
    assert len(big["data"]["large"]) < 20_000 and "cut: 40000 characters" in big["data"]["large"]
    # nothing the Role does not grant was asked of the cluster
    assert world.kube.forbidden == []


async def test_secrets_and_other_kinds_are_refused_before_the_cluster_is_asked(
    world: World,
) -> None:
    def asked() -> list[tuple[str, str]]:
        return [r for r in world.kube.requests if f"/namespaces/{WS}/" in r[1]]

    before = asked()
    for kind in ("Secret", "secrets", "Role", "Namespace", "Node", "Lease"):
        with pytest.raises(Forbidden, match="not readable by this sandbox") as refused:
            await call(world, "k8s.read.get", kind=kind, name="sandbox-gateway-token")
        assert "no Secrets" in refused.value.detail
        with pytest.raises(Forbidden):
            await call(world, "k8s.read.list", kind=kind)
    assert asked() == before  # only the sandbox was read (from the store)
    # and the Role really grants no Secret: the ServiceAccount itself is refused
    with httpx.Client(
        base_url=world.kube.url, headers={"Authorization": f"Bearer {SA_TOKEN}"}
    ) as c:
        assert c.get(f"/api/v1/namespaces/{WS}/secrets/sandbox-gateway-token").status_code == 403
        assert c.get(f"/api/v1/namespaces/{OTHER_WS}/pods/bob-0").status_code == 403


async def test_logs_are_bounded_and_name_the_container(world: World) -> None:
    logs = await call(world, "k8s.read.logs", pod="pty-server-0", tail=5)
    assert logs["lines"] == [f"line {i}" for i in range(296, 301)]
    default = await call(world, "k8s.read.logs", pod="pty-server-0")
    assert len(default["lines"]) == 100 and default["lines"][-1] == "line 300"
    side = await call(world, "k8s.read.logs", pod="two-0", container="sidecar")
    assert side["lines"] == ["sidecar says hi"]
    with pytest.raises(Invalid, match="container name must be specified"):
        await call(world, "k8s.read.logs", pod="two-0")
    with pytest.raises(NotFound):
        await call(world, "k8s.read.logs", pod="bob-0")  # another namespace's: not here
    for bad in (0, 1001, "5", True):
        with pytest.raises(Invalid, match="tail"):
            await call(world, "k8s.read.logs", pod="pty-server-0", tail=bad)


async def test_events_newest_first_and_per_object(world: World) -> None:
    every = await call(world, "k8s.read.events")
    assert [e["reason"] for e in every["events"]] == ["Started", "Pulled", "Scheduled"]
    about = await call(world, "k8s.read.events", name="two-0", limit=5)
    assert [(e["object"], e["reason"]) for e in about["events"]] == [("Pod/two-0", "Pulled")]
    two = await call(world, "k8s.read.events", limit=2)
    assert len(two["events"]) == 2 and two["more"] is True


async def test_bad_arguments_and_missing_objects_say_why(world: World) -> None:
    with pytest.raises(NotFound, match="not found in the sandbox's namespace"):
        await call(world, "k8s.read.get", kind="Pod", name="bob-0")
    for bad_name in ("", "Upper", "a/b", 7, "x" * 300):
        with pytest.raises(Invalid):
            await call(world, "k8s.read.get", kind="Pod", name=bad_name)
    with pytest.raises(Invalid, match="kind"):
        await call(world, "k8s.read.get", kind="", name="x")
    with pytest.raises(Invalid, match="label"):
        await call(world, "k8s.read.list", kind="Pod", labels={"a b": "c"})
    with pytest.raises(Invalid, match="limit"):
        await call(world, "k8s.read.list", kind="Pod", limit=MAX_LIST + 1)


async def test_a_sandbox_without_a_namespace_yet_and_another_users_sandbox(
    world: World,
) -> None:
    fresh = await world.deps.store.create(
        Sandbox(
            metadata=ObjectMeta(
                name="beta", namespace="acme", annotations={ANNOTATION_SUB: "sub-ada"}
            ),
            spec=SandboxSpec(owner_email="ada@acme.com", org_slug="acme"),
        )
    )
    ctx = world.ctx()
    ctx = ToolContext(dataclasses.replace(ctx.caller, sandbox=fresh.name), ctx.services)
    with pytest.raises(Conflict, match="no workspace namespace yet"):
        await TOOLS["k8s.read.list"].handler(ctx, {"kind": "Pod"})
    # a token whose owner is not the sandbox's own finds nothing
    stranger = ToolContext(
        dataclasses.replace(
            ctx.caller, sandbox="alpha", owner_sub="sub-bob", owner_email="bob@acme.com"
        ),
        ctx.services,
    )
    with pytest.raises(NotFound):
        await TOOLS["k8s.read.get"].handler(stranger, {"kind": "Pod", "name": "pty-server-0"})


async def test_k8s_reads_through_the_mcp_client_in_kubernetes_mode(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sandbox api``'s app (the same as ``sandbox mcp --http``'s) over the fake: the
    tools listed for the sandbox's MCP token, called with the official client, the reader
    made from KUBECONFIG (here: the sandbox's ServiceAccount)."""
    monkeypatch.setenv("KUBECONFIG", str(world.sa_config))
    settings = load_settings(data_dir=tmp_path / "api-data", store="kube")
    deps = build_api(settings, store=KubeStore(kubeconfig_path=str(world.kube.kubeconfig_path)))
    assert deps.kube_reader is not None
    config = uvicorn.Config(
        create_app(deps), host="127.0.0.1", port=free_port(), lifespan="on", **UVICORN_OPTIONS
    )
    server = Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.01)
        token = deps.mcp_tokens.issue(await deps.store.get("acme", "alpha"))
        url = f"http://127.0.0.1:{config.port}/mcp"
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as h,
            Client(streamable_http_client(url, http_client=h)) as client,
        ):
            names = {t.title for t in (await client.list_tools()).tools}
            assert {"k8s.read.get", "k8s.read.list", "k8s.read.logs", "k8s.read.events"} <= names
            # previews run in the sandbox's pod (tests/kube/test_kube_previews.py)
            assert {"preview.start", "preview.stop", "preview.list"} <= names
            listed = await client.call_tool("k8s.read.list", {"kind": "Pod"})
            assert not listed.is_error, listed.content
            assert sorted(p["name"] for p in listed.structured_content["items"]) == [
                "pty-server-0",
                "two-0",
            ]
            logs = await client.call_tool("k8s.read.logs", {"pod": "pty-server-0", "tail": 2})
            assert logs.structured_content["lines"] == ["line 299", "line 300"]
            secret = await client.call_tool(
                "k8s.read.get", {"kind": "Secret", "name": "sandbox-gateway-token"}
            )
            assert secret.is_error
            assert secret.structured_content["error"] == "kind-not-allowed"
            assert "sk-never-shown" not in str(secret.content)
            too_many = await client.call_tool("k8s.read.logs", {"pod": "x", "tail": 5000})
            assert too_many.is_error  # the schema's maximum, said as a tool error
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
    assert world.kube.forbidden == []  # every read was within the sandbox's Role


def test_the_tools_are_not_offered_without_a_cluster() -> None:
    settings = load_settings()
    embedded = McpServices(settings=settings, sessions=object())
    assert not any(t.available(embedded) for t in k8s_tools.TOOLS)
    assert all(
        t.available(McpServices(settings=settings, sessions=object(), kube=object()))
        for t in k8s_tools.TOOLS
    )
    assert {t.name for t in k8s_tools.TOOLS} == {
        "k8s.read.get",
        "k8s.read.list",
        "k8s.read.logs",
        "k8s.read.events",
    }
    assert all(t.family == "k8s.read" for t in k8s_tools.TOOLS)


async def test_a_reader_the_cluster_refuses_says_so(world: World) -> None:
    """A reader whose identity holds no grant (a deployment that did not bind it): the
    cluster's 403 comes back as ``forbidden`` with the cluster's reason."""
    config = world.kube.add_user("nobody-token", User("system:serviceaccount:catalyst-system:mcp"))
    reader = KubeReader.from_config(str(config))
    try:
        ctx = world.ctx(kube=reader)
        with pytest.raises(Forbidden, match="the cluster refused to read pods") as refused:
            await TOOLS["k8s.read.list"].handler(ctx, {"kind": "Pod"})
        assert "cannot list resource" in refused.value.detail
        with pytest.raises(Forbidden, match="cluster refused"):
            await TOOLS["k8s.read.logs"].handler(ctx, {"pod": "pty-server-0"})
    finally:
        await reader.close()
