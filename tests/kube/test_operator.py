"""The kopf operator end to end against the fake API server (kopf's KopfRunner).

What it proves: kopf discovers the CRD, watches Sandboxes, and the glue turns the pure
plans into real API calls — namespace, children, status, finalizer — and, on deletion,
waits for the namespace cascade before releasing the finalizer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import kopf
import pytest
from kopf.testing import KopfRunner
from lightkube import AsyncClient, KubeConfig

from openova_sandbox.controller.kube.handlers import OperatorOptions, build_registry
from openova_sandbox.controller.kube.render import RenderConfig
from openova_sandbox.testing.kubeapi import FakeKube

SB = "/apis/sandbox.openova.io/v1/namespaces/acme/sandboxes"
NS = "sandbox-dev-at-acme-com"


def wait_for(check: Callable[[], Any], *, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


def sandbox_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sandbox.openova.io/v1",
        "kind": "Sandbox",
        "metadata": {"name": name},
        "spec": {
            "owner": {"email": "dev@acme.com", "orgRef": {"slug": "acme"}},
            "quota": {"cpu": "2", "memory": "4Gi", "storage": "20Gi", "concurrentSessions": 3},
            "agentCatalogue": ["claude-code"],
            "repos": [{"giteaRepo": "acme/web"}],
            **spec,
        },
    }


@pytest.fixture
def operator(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> Iterator[KopfRunner]:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    config = KubeConfig.from_file(kube.kubeconfig_path)
    registry = build_registry(
        OperatorOptions(render=RenderConfig(), max_requeue=0.3),
        client_factory=lambda: AsyncClient(config=config, trust_env=False),
    )
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    with KopfRunner(
        ["run", "--standalone", "--all-namespaces"],
        registry=registry,
        settings=settings,
        timeout=30,
    ) as runner:
        yield runner
    assert runner.exception is None, runner.output


def test_operator_provisions_reports_ready_and_cleans_up(
    kube: FakeKube, operator: KopfRunner
) -> None:
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201

        def sts() -> Any:
            got = http.get(f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server")
            return got.json() if got.status_code == 200 else None

        statefulset = wait_for(sts)
        assert statefulset["spec"]["replicas"] == 1
        sandbox = http.get(f"{SB}/alpha").json()
        assert sandbox["metadata"]["finalizers"] == ["sandbox.openova.io/finalizer"]
        assert sandbox["status"]["workspaceNamespace"] == NS
        for path in (
            f"/api/v1/namespaces/{NS}/resourcequotas/sandbox-quota",
            f"/api/v1/namespaces/{NS}/persistentvolumeclaims/repo-web",
            f"/api/v1/namespaces/{NS}/persistentvolumeclaims/home",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings/sandbox",
            f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/pty-server",
            f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/sandbox-ingress",
        ):
            assert http.get(path).status_code == 200, path

        def phase() -> str:
            return str(http.get(f"{SB}/alpha").json().get("status", {}).get("phase", ""))

        wait_for(lambda: phase() == "Provisioning")
        kube.set_ready_replicas(NS, "pty-server", 1)  # play the StatefulSet controller
        wait_for(lambda: phase() == "Ready")
        conditions = http.get(f"{SB}/alpha").json()["status"]["conditions"]
        assert [c["type"] for c in conditions] == [
            "NamespaceReady",
            "RBACReady",
            "PVCsReady",
            "PtyReady",
            "McpReady",
            "TokenReady",
            "Ready",
        ]
        assert all(c["status"] == "True" for c in conditions)

        # a spec change reaches the workspace: a new repo gets its volume and mount
        merge = {"Content-Type": "application/merge-patch+json"}
        http.patch(
            f"{SB}/alpha",
            headers=merge,
            json={"spec": {"repos": [{"giteaRepo": "acme/web"}, {"giteaRepo": "acme/api"}]}},
        )
        wait_for(
            lambda: (
                http.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/repo-api").status_code
                == 200
            )
        )

        def workspace_mounts() -> list[str]:
            pod = (sts() or {}).get("spec", {}).get("template", {}).get("spec", {})
            mounts = pod.get("containers", [{}])[0].get("volumeMounts", [])
            return [m["mountPath"] for m in mounts if m["mountPath"].startswith("/workspace/")]

        wait_for(lambda: workspace_mounts() == ["/workspace/web", "/workspace/api"])
        wait_for(lambda: http.get(f"{SB}/alpha").json()["status"].get("observedGeneration") == 2)

        http.delete(f"{SB}/alpha")
        wait_for(lambda: http.get(f"{SB}/alpha").status_code == 404)
        assert http.get(f"/api/v1/namespaces/{NS}").status_code == 404


def test_invalid_sandbox_fails_without_creating_anything(
    kube: FakeKube, operator: KopfRunner
) -> None:
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        body = sandbox_body("cross", repos=[{"giteaRepo": "globex/secret"}])
        assert http.post(SB, json=body).status_code == 201

        def failed() -> Any:
            status = http.get(f"{SB}/cross").json().get("status") or {}
            return status if status.get("phase") == "Failed" else None

        status = wait_for(failed)
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "CrossOrgRepo"
        assert "globex" in ready["message"]
        assert http.get(f"/api/v1/namespaces/{NS}").status_code == 404
        assert http.get(f"{SB}/cross").json()["metadata"].get("finalizers") is None


def test_run_operator_logs_in_from_kubeconfig_and_stops_on_the_flag(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import threading

    from openova_sandbox.config import load_settings
    from openova_sandbox.controller.kube.operator import run_operator

    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    errors: list[BaseException] = []

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(run_operator(load_settings(), stop_flag=stop))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=target)
    thread.start()
    try:
        with httpx.Client(base_url=kube.url, timeout=5) as http:
            assert http.post(SB, json=sandbox_body("beta")).status_code == 201
            wait_for(lambda: http.get(f"/api/v1/namespaces/{NS}").status_code == 200)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors == []
