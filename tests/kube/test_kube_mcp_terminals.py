"""A sandbox's terminals over MCP in Kubernetes mode (docs/mcp.md, "Tools: session,
sandbox, usage", "Live resources and events"): the MCP server relays the caller's own
sandbox MCP token to the sandbox's terminal server, which holds exactly that token
(``SANDBOX_MCP_TOKEN``, from the Secret the operator writes) and accepts it for reading
its own session list and nothing else.

Real parts: the fake API server; the API's app (``sandbox api``'s composition, which
``sandbox mcp --http`` serves too) over the kube store; the operator (kopf for real)
writing the pod's MCP token Secret; a real ``sandbox pty-server`` process started with
the environment of the StatefulSet the operator wrote (its literal values, and its
``secretKeyRef`` values read from the Secrets it wrote), running real shells in real
PTYs; the official MCP client with the token the pod holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
import websockets
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api
from openova_sandbox.api.deps import AppDeps
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.controller.kube.render import RenderConfig
from openova_sandbox.domain.model import Sandbox
from openova_sandbox.services.mcp_tokens import McpTokens, PodMcpTokens
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube
from openova_sandbox.testing.server import free_port, serve_in_thread
from support.pod import pty_server
from support.waiting import wait_for

from .test_operator import running_operator

pytestmark = pytest.mark.timeout(120)
SESSIONS = "/api/v1/sandbox/sessions"
NS = "sandbox-dev-at-acme-com"
SB = "/apis/sandbox.openova.io/v1/namespaces/acme/sandboxes"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"
MCP_URL = "http://sandbox-mcp.catalyst-system.svc/mcp"


def pod_env(cluster: httpx.Client, tmp_path: Path, agents: Path) -> dict[str, str]:
    """The pty-server container's environment as the operator wrote it into the fake
    API server: literal values, and each ``secretKeyRef`` read from its Secret (an
    optional one that is missing is left out, as the kubelet does), with the paths a
    pod has made local."""
    sts = cluster.get(STS).json()
    (container,) = [
        c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "pty-server"
    ]
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        got = cluster.get(f"/api/v1/namespaces/{NS}/secrets/{ref['name']}")
        if got.status_code == 404 and ref.get("optional"):
            continue
        assert got.status_code == 200, (ref, got.text)
        env[item["name"]] = base64.b64decode(got.json()["data"][ref["key"]]).decode()
    for path in ("work", "home"):
        (tmp_path / path).mkdir(exist_ok=True)
    env.update(
        SANDBOX_WORKDIR=str(tmp_path / "work"),
        HOME=str(tmp_path / "home"),
        SANDBOX_MCP_CONFIG=str(tmp_path / "mcp.json"),
        OPENOVA_SANDBOX_AGENTS_PATH=str(agents),
        # no issuer is configured here: the pod trusts the API's embedded issuer, whose
        # key is in the API's data dir (in a cluster: the API's JWKS)
        SANDBOX_DATA_DIR=str(tmp_path / "data"),
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "CATALYST_"))}
    return {**base, **env}


class World:
    def __init__(
        self, api_url: str, cluster_url: str, deps: AppDeps, issuer: EmbeddedIssuer
    ) -> None:
        self.api_url = api_url
        self.cluster_url = cluster_url
        self.deps = deps
        self.issuer = issuer
        self.user_token = issuer.mint(sub="u-1", email="dev@acme.com", org="acme")
        self.auth = {"Authorization": f"Bearer {self.user_token}"}
        other = issuer.mint(sub="u-2", email="eve@acme.com", org="acme")
        self.other_auth = {"Authorization": f"Bearer {other}"}
        self.pod = ""
        self.pod_token = ""  # the MCP token the pod holds (the operator's Secret)


@pytest.fixture
def world(kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"]}]))
    pty_port = free_port()
    settings = load_settings(
        data_dir=tmp_path / "data",
        store="kube",
        agents_path=str(agents),
        kube_pty_url_template=f"http://127.0.0.1:{pty_port}",
        kube_mcp_url=MCP_URL,
    )
    deps = build_api(settings, store=KubeStore(kubeconfig_path=str(kube.kubeconfig_path)))
    issuer = EmbeddedIssuer.load(tmp_path / "data")
    # the operator signs the pods' tokens with the control plane's key (here: the API's)
    tokens = PodMcpTokens(McpTokens(issuer, None, url=MCP_URL))
    render = RenderConfig(git_base_url="https://gitea.example.com", mcp_url=MCP_URL, mcp_token=True)
    with (
        serve_in_thread(create_app(deps)) as server,
        running_operator(kube, render=render, mcp_tokens=tokens),
        httpx.Client(base_url=kube.url, timeout=10) as cluster,
    ):
        world = World(server.url, kube.url, deps, issuer)
        api = httpx.Client(base_url=server.url, timeout=20)
        made = api.post(SESSIONS, headers=world.auth, json={"agent": "aider", "name": "dev"})
        assert made.status_code == 201, made.text
        wait_for("the StatefulSet", lambda: cluster.get(STS).status_code == 200)
        kube.set_ready_replicas(NS, "pty-server", 1)  # play the StatefulSet controller
        secret = f"/api/v1/namespaces/{NS}/secrets/sandbox-mcp-token"
        wait_for("the MCP token Secret", lambda: cluster.get(secret).status_code == 200)

        def ready() -> bool:
            got = api.get(f"{SESSIONS}/dev", headers=world.auth).json()
            return bool(got.get("status") == "running")

        wait_for("dev running", ready)
        # a second sandbox of the owner, after the first has its workspace namespace
        made = api.post(SESSIONS, headers=world.auth, json={"agent": "aider", "name": "helper"})
        assert made.status_code == 201, made.text
        env = pod_env(cluster, tmp_path, agents)
        world.pod_token = env["SANDBOX_MCP_TOKEN"]
        with pty_server(env, pty_port) as pod:
            world.pod = pod
            yield world
        api.close()


@contextlib.asynccontextmanager
async def mcp(world: World, token: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with http, Client(streamable_http_client(f"{world.api_url}/mcp", http_client=http)) as c:
        yield c


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    return data


def open_terminal(world: World) -> str:
    """An extra terminal opened by the owner through the API (relayed to the pod)."""
    opened = httpx.post(
        f"{world.api_url}{SESSIONS}/dev/terminals",
        headers=world.auth,
        json={"agent": "aider"},
        timeout=20,
    )
    assert opened.status_code == 201, opened.text
    return str(opened.json()["id"])


async def test_an_agent_lists_its_own_sandboxs_terminals_from_the_pod(world: World) -> None:
    tid = open_terminal(world)
    async with mcp(world, world.pod_token) as client:
        names = {t.title for t in (await client.list_tools()).tools}
        assert "sandbox.terminals" in names
        info = ok(await client.call_tool("session.info", {}))
        assert info["terminals"] is not None, info
        assert [(t["id"], t["agent"]) for t in info["terminals"]] == [(tid, "aider")]
        assert info["terminals"][0]["attachUrl"].endswith(f"/dev/terminals/{tid}/attach")

        listed = ok(await client.call_tool("sandbox.terminals", {}))
        assert listed == {"id": "dev", "terminals": info["terminals"]}

        templates = await client.list_resource_templates()
        assert "sandbox-terminals" in {t.name for t in templates.resource_templates}
        read = await client.read_resource("openova://sandbox/dev/terminals")
        content = read.contents[0]
        assert isinstance(content, types.TextResourceContents)
        assert json.loads(content.text) == {"sandbox": "dev", "terminals": info["terminals"]}

        # closed through the API: the next listing is the pod's again, not a copy
        closed = httpx.delete(
            f"{world.api_url}{SESSIONS}/dev/terminals/{tid}", headers=world.auth, timeout=20
        )
        assert closed.status_code == 204, closed.text
        assert ok(await client.call_tool("sandbox.terminals", {}))["terminals"] == []


async def test_another_sandbox_of_the_owner_answers_its_published_count_only(
    world: World,
) -> None:
    async with mcp(world, world.pod_token) as client:
        helper = ok(await client.call_tool("sandbox.terminals", {"id": "helper"}))
        assert helper["id"] == "helper"
        assert helper["terminals"] is None
        assert helper["sessions"] == 0
        assert "own terminals" in helper["detail"]
        read = await client.read_resource("openova://sandbox/helper/terminals")
        content = read.contents[0]
        assert isinstance(content, types.TextResourceContents)
        body = json.loads(content.text)
        assert (body["terminals"], body["sessions"]) == (None, 0)
        # another user's or a missing sandbox: not found, as everywhere
        missing = await client.call_tool("sandbox.terminals", {"id": "nope"})
        assert missing.is_error and missing.structured_content["error"] == "sandbox-not-found"


async def test_a_token_the_pod_does_not_hold_lists_nothing(world: World) -> None:
    open_terminal(world)
    # a good MCP token of the same sandbox (the MCP server admits it) that is not the
    # one the pod holds: the pod decides, and refuses it
    stored = Sandbox.from_dict(httpx.get(f"{world.cluster_url}{SB}/dev").json())
    fresh = world.deps.mcp_tokens.issue(stored)
    assert fresh != world.pod_token
    async with mcp(world, fresh) as client:
        info = ok(await client.call_tool("session.info", {}))
        assert info["terminals"] is None
        refused = await client.call_tool("sandbox.terminals", {})
        assert refused.is_error
        assert refused.structured_content["error"] == "terminals-refused"
        assert "MCP token" in refused.structured_content["detail"]


async def test_the_pods_token_opens_the_read_only_listing_and_nothing_else(
    world: World,
) -> None:
    tid = open_terminal(world)
    pod = world.pod
    bearer = {"Authorization": f"Bearer {world.pod_token}"}
    async with httpx.AsyncClient(base_url=pod, timeout=10) as http:
        listed = await http.get("/sessions", headers=bearer)
        assert listed.status_code == 200 and tid in listed.json()["sessions"]
        got = await http.get(f"/sessions/{tid}", headers=bearer)
        assert got.status_code == 200 and got.json()["agent"] == "aider"
        # nothing else: create, delete, resize, signal, the operator's routes
        for method, path, body in (
            ("POST", "/sessions", {"agent": "aider"}),
            ("DELETE", f"/sessions/{tid}", None),
            ("POST", f"/sessions/{tid}/resize", {"rows": 10, "cols": 10}),
            ("POST", f"/sessions/{tid}/signal", {"signal": "SIGINT"}),
            ("GET", "/idle", None),
            ("GET", "/previews", None),
        ):
            refused = await http.request(method, path, headers=bearer, json=body)
            assert refused.status_code == 401, (method, path, refused.text)
        assert (await http.get(f"/sessions/{tid}", headers=world.auth)).status_code == 200
        # a wrong token, one letter off, and another user's token: not this path
        wrong = world.pod_token[:-1] + ("A" if world.pod_token[-1] != "A" else "B")
        wrong_bearer = {"Authorization": f"Bearer {wrong}"}
        assert (await http.get("/sessions", headers=wrong_bearer)).status_code == 401
        assert (await http.get("/sessions", headers=world.other_auth)).status_code == 403
        # the token as a cookie or a query string is not it either
        assert (await http.get(f"/sessions?access_token={world.pod_token}")).status_code == 401
    # no attach
    url = pod.replace("http://", "ws://") + f"/sessions/{tid}/attach"
    async with websockets.connect(url, additional_headers=bearer) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(15):
                async for _ in ws:
                    pass
        assert ws.close_code == 1008


class Updates:
    def __init__(self) -> None:
        self.uris: list[str] = []

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.uris.append(str(message.params.uri))


@pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")
async def test_the_terminals_resource_follows_the_sandbox_object(world: World) -> None:
    # pods publish no session events: the resource is announced on the object's changes
    # (the operator writes the session count into the status)
    uri = "openova://sandbox/dev/terminals"
    updates = Updates()
    token = world.pod_token
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    client = Client(
        streamable_http_client(f"{world.api_url}/mcp", http_client=http),
        mode="legacy",
        message_handler=updates,
    )
    async with http, client:
        await client.subscribe_resource(uri)
        heard = len(updates.uris)
        patch = {"metadata": {"annotations": {"example.com/touched": "1"}}}
        async with httpx.AsyncClient(base_url=world.cluster_url, timeout=10) as cluster:
            patched = await cluster.patch(
                f"{SB}/dev",
                content=json.dumps(patch),
                headers={"Content-Type": "application/merge-patch+json"},
            )
        assert patched.status_code == 200, patched.text
        async with asyncio.timeout(10):
            while uri not in updates.uris[heard:]:
                await asyncio.sleep(0.05)
        read = await client.read_resource(uri)
        content = read.contents[0]
        assert isinstance(content, types.TextResourceContents)
        assert json.loads(content.text)["terminals"] == []
