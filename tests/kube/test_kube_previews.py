"""Previews in Kubernetes mode end to end on the fake API server (docs/kubernetes.md,
"Previews"): ``preview.start`` through the official MCP client writes the Sandbox's
previews annotation; the operator (kopf for real) applies the port's objects and tells
the sandbox's terminal server (a real ``sandbox pty-server`` process, configured as its
pod is, with the probe token from the ``pty-probe`` Secret the operator made) to run a
real ``python3 -m http.server``; ``status.portPreviews`` says ``listening``; the API's
authenticated proxy serves a page from it; ``preview.stop`` removes the objects and ends
the process. A malformed annotation is a condition, not a crash."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api
from openova_sandbox.api.deps import AppDeps
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.controller.kube.metrics import OperatorMetrics
from openova_sandbox.controller.kube.previews import ANNOTATION, OUTPUT_EVERY, OUTPUT_TAIL
from openova_sandbox.controller.kube.render import RenderConfig
from openova_sandbox.domain.model import Sandbox
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.terminal.preview_runner import listening
from openova_sandbox.testing.kubeapi import FakeKube
from openova_sandbox.testing.server import free_port, serve_in_thread
from support.waiting import until

from .real_pty_server import PtyServer, running_pty_server
from .test_operator import running_operator, sample

SESSIONS = "/api/v1/sandbox/sessions"
NS = "sandbox-dev-at-acme-com"
SB = "/apis/sandbox.openova.io/v1/namespaces/acme/sandboxes/dev"
SERVE = "exec python3 -m http.server $PORT --bind 127.0.0.1"
HOST = "{namespace}.sandbox.test"


class World:
    def __init__(self, kube: FakeKube, api_url: str, deps: AppDeps, issuer: EmbeddedIssuer):
        self.kube = kube
        self.api_url = api_url
        self.deps = deps
        token = issuer.mint(sub="u-1", email="dev@acme.com", org="acme")
        self.auth = {"Authorization": f"Bearer {token}"}
        self.user_token = token
        self.pod: PtyServer | None = None
        self.metrics = OperatorMetrics()  # the operator's (set by the fixture)
        self.cluster = httpx.AsyncClient(base_url=kube.url, timeout=10)
        self.api = httpx.AsyncClient(base_url=api_url, timeout=20)

    async def sandbox(self) -> dict[str, Any]:
        got = await self.cluster.get(SB)
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def entries(self) -> dict[int, dict[str, Any]]:
        status = (await self.sandbox()).get("status") or {}
        return {e["port"]: e for e in status.get("portPreviews") or []}

    async def condition(self, type_: str) -> dict[str, Any]:
        status = (await self.sandbox()).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})

    async def exists(self, path: str) -> bool:
        return (await self.cluster.get(path)).status_code == 200


def objects(port: int) -> tuple[str, str, str]:
    return (
        f"/api/v1/namespaces/{NS}/services/preview-{port}",
        f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/preview-{port}",
        f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/preview-{port}",
    )


@pytest.fixture
async def world(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    """The API (``sandbox api``'s app, which ``sandbox mcp --http`` serves too), the
    operator, a Ready sandbox ``dev`` and its terminal server running as its pod would."""
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    pty_port = free_port()
    settings = load_settings(
        data_dir=tmp_path / "data",
        store="kube",
        # the fake has no cluster DNS: the port's Service is the pod's own address here
        kube_preview_url_template="http://127.0.0.1:{port}",
    )
    deps = build_api(settings, store=KubeStore(kubeconfig_path=str(kube.kubeconfig_path)))
    render = RenderConfig(git_base_url="https://gitea.example.com", sandbox_host=HOST)
    metrics = OperatorMetrics()
    with (
        serve_in_thread(create_app(deps)) as server,
        running_operator(
            kube, pty_url_template=f"http://127.0.0.1:{pty_port}", render=render, metrics=metrics
        ),
    ):
        issuer = EmbeddedIssuer.load(tmp_path / "data")
        world = World(kube, server.url, deps, issuer)
        world.metrics = metrics
        made = await world.api.post(
            SESSIONS, headers=world.auth, json={"agent": "aider", "name": "dev"}
        )
        assert made.status_code == 201, made.text
        sts = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"
        await until("the StatefulSet", lambda: world.exists(sts))
        kube.set_ready_replicas(NS, "pty-server", 1)  # play the StatefulSet controller

        # the operator makes the probe token's Secret at its first probe; the pod reads it
        secret = f"/api/v1/namespaces/{NS}/secrets/pty-probe"
        await until("the probe Secret", lambda: world.exists(secret))
        data = (await world.cluster.get(secret)).json()["data"]["token"]
        probe = base64.b64decode(data).decode()
        with running_pty_server(
            tmp_path, probe_token=probe, sandbox="dev", port=pty_port, data_dir=tmp_path / "data"
        ) as pod:
            world.pod = pod
            try:
                yield world
            finally:
                await world.cluster.aclose()
                await world.api.aclose()


async def mcp_client(world: World, **options: Any) -> Any:
    # the Sandbox as stored (the API's own store is bound to its server's loop)
    token = world.deps.mcp_tokens.issue(Sandbox.from_dict(await world.sandbox()))
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return http, Client(streamable_http_client(f"{world.api_url}/mcp", http_client=http), **options)


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    return data


class Updates:
    def __init__(self) -> None:
        self.uris: list[str] = []

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.uris.append(str(message.params.uri))


@pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")
async def test_a_preview_runs_in_the_pod_is_proxied_and_stopped(world: World) -> None:
    assert world.pod is not None
    (world.pod.workdir / "index.html").write_text("served from the sandbox's pod")
    port = free_port()
    uri = f"openova://preview/dev/{port}"
    updates = Updates()
    http, client = await mcp_client(world, mode="legacy", message_handler=updates)
    async with http, client:
        names = {t.title for t in (await client.list_tools()).tools}
        assert {"preview.start", "preview.stop", "preview.list"} <= names
        await client.subscribe_resource(uri)

        started = ok(
            await client.call_tool("preview.start", {"port": port, "command": SERVE, "wait": 30})
        )
        assert started["status"] == "listening", started
        assert started["path"] == f"/preview/dev/{port}/"
        # what it wrote: the annotation; what the operator did: objects and status
        wanted = json.loads((await world.sandbox())["metadata"]["annotations"][ANNOTATION])
        assert [(w["port"], w["command"], w["public"]) for w in wanted] == [(port, SERVE, False)]
        service, policy, route = objects(port)
        assert await world.exists(service) and await world.exists(policy)
        assert not await world.exists(route)  # not public: no route
        entry = (await world.entries())[port]
        assert (entry["status"], entry["id"]) == ("listening", wanted[0]["id"])
        # bound to 127.0.0.1 (this test's machine): in a pod the Service could not reach it
        assert "loopback address only" in started["message"]
        assert (await world.condition("PreviewsReady"))["status"] == "True"
        assert listening(port)

        # the API's authenticated proxy serves it to the owner, to nobody else
        url = f"{world.api_url}/preview/dev/{port}/index.html"
        page = await world.api.get(url, headers=world.auth, follow_redirects=True)
        assert page.status_code == 200 and page.text == "served from the sandbox's pod"
        assert (await world.api.get(url)).status_code == 401

        listed = ok(await client.call_tool("preview.list", {}))
        assert [(p["port"], p["status"]) for p in listed["previews"]] == [(port, "listening")]
        read = await client.read_resource(uri)
        content = read.contents[0]
        assert isinstance(content, types.TextResourceContents)
        assert json.loads(content.text)["status"] == "listening"
        assert uri in updates.uris  # the resource followed starting -> listening

        # the owner's own token does not open the pod's preview routes
        pod_url = f"{world.pod.url}/previews"
        bearer = {"Authorization": f"Bearer {world.user_token}"}
        assert (await world.api.get(pod_url, headers=bearer)).status_code == 401

        taken = await client.call_tool("preview.start", {"port": port, "command": "true"})
        assert taken.is_error and taken.structured_content["error"] == "preview-exists"

        heard = len(updates.uris)
        stopped = ok(await client.call_tool("preview.stop", {"port": port}))
        assert stopped["status"] == "stopped"
        for path in (service, policy):
            await until(f"{path} deleted", lambda p=path: _gone(world, p))  # type: ignore[misc]
        await until("the server ended", lambda: _true(not listening(port)))
        await until("the status entry gone", lambda: _empty(world))
        assert uri in updates.uris[heard:]  # and it followed the stop
        assert ok(await client.call_tool("preview.list", {}))["previews"] == []
    gone = await world.api.get(url, headers=world.auth, follow_redirects=True)
    assert gone.status_code == 404


@pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")
async def test_a_running_preview_shows_what_it_prints(world: World) -> None:
    """What a dev server prints while it keeps running reaches ``preview.list`` (the
    operator keeps its tail in the status), bounded; a tail that does not change writes
    no status, and new output alone does not announce the live resource (embedded mode
    announces a start, a stop and an exit only)."""
    port, chatty = free_port(), free_port()
    uri = f"openova://preview/dev/{port}"
    updates = Updates()
    http, client = await mcp_client(world, mode="legacy", message_handler=updates)
    async with http, client:
        await client.subscribe_resource(uri)
        command = f"echo 'compiled: 3 modules'; {SERVE}"
        started = ok(
            await client.call_tool("preview.start", {"port": port, "command": command, "wait": 30})
        )
        assert started["status"] == "listening", started

        async def listed(port: int, said: str) -> dict[str, Any] | None:
            views = ok(await client.call_tool("preview.list", {}))["previews"]
            view: dict[str, Any] = next(v for v in views if v["port"] == port)
            return view if said in view["output"] else None

        # what it printed while it started and once it listened, the server still running
        shown = await until("the startup output", lambda: listed(port, "Serving HTTP on"))
        assert shown["status"] == "listening" and "compiled: 3 modules" in shown["output"]
        assert listening(port)

        # settled: passes that read the pod's unchanged output write no status
        def settled_passes() -> float:
            return sample(world.metrics, "sandbox_operator_reconciles_total", result="unchanged")

        writes, passes = _status_writes(world), settled_passes()
        await until("settled passes", lambda: _true(settled_passes() >= passes + 4))
        assert _status_writes(world) == writes
        assert (await world.entries())[port]["output"] == shown["output"]

        # a line it prints while it runs (a request's log line) is shown, not announced
        heard = len(updates.uris)
        page = await world.api.get(
            f"{world.api_url}/preview/dev/{port}/", headers=world.auth, follow_redirects=True
        )
        assert page.status_code == 200
        served = await until("the request's log line", lambda: listed(port, '"GET / HTTP/1.1" 200'))
        assert served["status"] == "listening" and listening(port)
        ok(await client.call_tool("preview.stop", {"port": port}))
        await until("the status entry gone", lambda: _empty(world))
        await until("the stop announced", lambda: _true(uri in updates.uris[heard:]))
        assert updates.uris[heard:].count(uri) == 1, updates.uris[heard:]

        # bounded: the newest OUTPUT_TAIL characters of a chatty start
        flood = f"head -c 30000 /dev/zero | tr '\\0' y; echo; echo ready; {SERVE}"
        ok(await client.call_tool("preview.start", {"port": chatty, "command": flood, "wait": 30}))
        tail = await until("the chatty tail", lambda: listed(chatty, "Serving HTTP on"))
        assert "ready" in tail["output"] and len(tail["output"]) <= OUTPUT_TAIL
        assert len((await world.entries())[chatty]["output"]) <= OUTPUT_TAIL
        ok(await client.call_tool("preview.stop", {"port": chatty}))


async def test_a_chatty_preview_rewrites_its_output_at_most_every_output_every(
    world: World,
) -> None:
    """A dev server that prints all the time: the operator's passes (every 0.3 s here,
    and one after each of its own writes) rewrite the status with its output at most
    every ``OUTPUT_EVERY`` (the pass's clock has whole seconds: more than a second
    apart), not once per pass."""
    port = free_port()
    chatter = f"while :; do echo tick; sleep 0.05; done & {SERVE}"
    http, client = await mcp_client(world)
    async with http, client:
        started = ok(
            await client.call_tool("preview.start", {"port": port, "command": chatter, "wait": 30})
        )
        assert started["status"] == "listening", started

        def passes() -> float:
            return sum(
                sample(world.metrics, "sandbox_operator_reconciles_total", result=r)
                for r in ("changed", "unchanged", "conflict")
            )

        first_writes, first_passes = _status_writes(world), passes()
        began = time.monotonic()
        await until("passes", lambda: _true(passes() >= first_passes + 15))
        seconds = time.monotonic() - began
        writes = _status_writes(world) - first_writes
        ran = passes() - first_passes
        assert 1 <= writes <= seconds / (OUTPUT_EVERY - 1) + 1, (writes, ran, seconds)
        assert "tick" in (await world.entries())[port]["output"]
        ok(await client.call_tool("preview.stop", {"port": port}))


def _status_writes(world: World) -> int:
    return world.kube.requests.count(("PUT", f"{SB}/status"))


async def test_an_exit_a_public_preview_and_the_limits(world: World) -> None:
    http, client = await mcp_client(world)
    async with http, client:
        port = free_port()
        exited = ok(
            await client.call_tool(
                "preview.start", {"port": port, "command": "echo broken build; exit 2", "wait": 30}
            )
        )
        assert (exited["status"], exited["exitCode"]) == ("exited", 2)
        assert "broken build" in exited["output"]
        # exited stays exited (the operator does not run it again) until started again
        again = ok(
            await client.call_tool("preview.start", {"port": port, "command": SERVE, "wait": 30})
        )
        assert again["status"] == "listening"

        public = free_port()
        shown = ok(
            await client.call_tool(
                "preview.start", {"port": public, "command": SERVE, "public": True, "wait": 30}
            )
        )
        assert shown["status"] == "listening"
        assert shown["publicUrl"] == f"https://acme.sandbox.test/preview/dev/{public}/"
        route = await world.cluster.get(objects(public)[2])
        assert route.status_code == 200
        assert route.json()["spec"]["hostnames"] == ["acme.sandbox.test"]

        for extra in (free_port(), free_port()):
            ok(await client.call_tool("preview.start", {"port": extra, "command": "sleep 60"}))
        full = await client.call_tool("preview.start", {"port": free_port(), "command": "true"})
        assert full.is_error and full.structured_content["error"] == "preview-limit"
        bad = await client.call_tool("preview.start", {"port": 80, "command": "true"})
        assert bad.is_error
        ok(await client.call_tool("preview.stop", {"port": public}))
        await until("the route deleted", lambda: _gone(world, objects(public)[2]))


async def test_a_malformed_annotation_is_a_condition_and_nothing_stops(world: World) -> None:
    http, client = await mcp_client(world)
    async with http, client:
        port = free_port()
        ok(await client.call_tool("preview.start", {"port": port, "command": SERVE, "wait": 30}))
    for broken, said in (
        ("not json", "is not JSON"),
        ('[{"port": 80, "command": "x", "id": "a"}]', "port must be an integer in 1024-65535"),
        (
            json.dumps([{"port": 2000 + i, "command": "x", "id": "a"} for i in range(5)]),
            "at most 4",
        ),
    ):
        patch = {"metadata": {"annotations": {ANNOTATION: broken}}}
        headers = {"Content-Type": "application/merge-patch+json"}
        assert (await world.cluster.patch(SB, json=patch, headers=headers)).status_code == 200

        async def refused(said: str = said) -> bool:
            found = await world.condition("PreviewsReady")
            return found.get("status") == "False" and said in found.get("message", "")

        await until("the PreviewsReady condition", refused)
        found = await world.condition("PreviewsReady")
        assert found["reason"] == "InvalidPreviews"
        assert (await world.sandbox())["status"]["phase"] == "Ready"  # a flag, not a failure
        assert listening(port)  # what ran is left alone
        assert await world.exists(objects(port)[0])
    # fixed: nothing wanted any more, so everything goes
    patch = {"metadata": {"annotations": {ANNOTATION: None}}}
    headers = {"Content-Type": "application/merge-patch+json"}
    assert (await world.cluster.patch(SB, json=patch, headers=headers)).status_code == 200
    await until("the server ended", lambda: _true(not listening(port)))
    await until("the service deleted", lambda: _gone(world, objects(port)[0]))
    assert (await world.condition("PreviewsReady"))["status"] == "True"


async def _gone(world: World, path: str) -> bool:
    return not await world.exists(path)


async def _true(value: bool) -> bool:
    return value


async def _empty(world: World) -> bool:
    return not await world.entries()
