"""The kopf operator end to end against the fake API server (kopf's KopfRunner).

What it proves: kopf discovers the CRD, watches Sandboxes, and the glue turns the pure
plans into real API calls — namespace, children, status, finalizer — and, on deletion,
waits for the namespace cascade before releasing the finalizer.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import kopf
import pytest
from kopf.testing import KopfRunner
from lightkube import AsyncClient, KubeConfig

from openova_sandbox.config import load_settings
from openova_sandbox.controller.kube.handlers import OperatorOptions, build_registry
from openova_sandbox.controller.kube.leader import ElectionTiming
from openova_sandbox.controller.kube.metrics import OperatorMetrics
from openova_sandbox.controller.kube.operator import run_operator
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


def sandbox_body(
    name: str, *, email: str = "dev@acme.com", org: str = "acme", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "sandbox.openova.io/v1",
        "kind": "Sandbox",
        "metadata": {"name": name},
        "spec": {
            "owner": {"email": email, "orgRef": {"slug": org}},
            "quota": {"cpu": "2", "memory": "4Gi", "storage": "20Gi", "concurrentSessions": 3},
            "agentCatalogue": ["claude-code"],
            "repos": [{"giteaRepo": "acme/web"}],
            **spec,
        },
    }


@contextmanager
def running_operator(
    kube: FakeKube,
    *,
    metrics: OperatorMetrics | None = None,
    pty_url_template: str = "",
    render: RenderConfig | None = None,
    **options: Any,
) -> Iterator[KopfRunner]:
    """kopf for real (its own thread and loop), watching every namespace of ``kube``;
    ``options``: more of :class:`OperatorOptions` (a ledger, a grant secret, ...)."""
    config = KubeConfig.from_file(kube.kubeconfig_path)
    registry = build_registry(
        OperatorOptions(
            render=render or RenderConfig(git_base_url="https://gitea.example.com"),
            max_requeue=0.3,
            error_backoff=0.1,
            metrics=metrics or OperatorMetrics(),
            pty_url_template=pty_url_template,
            **options,
        ),
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


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


@pytest.fixture
def operator(
    kube: FakeKube, metrics: OperatorMetrics, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KopfRunner]:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    with running_operator(kube, metrics=metrics) as runner:
        yield runner


def secret_in(http: httpx.Client, path: str, key: str) -> str:
    """The value of ``key`` in the Secret at ``path`` ("" while there is none)."""
    got = http.get(path)
    if got.status_code != 200:
        return ""
    return base64.b64decode(got.json()["data"][key]).decode()


def bare_statefulset(http: httpx.Client, namespace: str) -> None:
    """A namespace and a minimal ``pty-server`` StatefulSet in it (what a Secret's
    rewrite stamps for a restart), without an operator."""
    assert http.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}).is_success
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "pty-server", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "pty"}},
            "template": {"metadata": {"labels": {"app": "pty"}}, "spec": {"containers": []}},
        },
    }
    assert http.post(f"/apis/apps/v1/namespaces/{namespace}/statefulsets", json=sts).is_success


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


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
            "RouteReady",
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


def test_a_quota_change_reaches_the_workspace(
    kube: FakeKube, operator: KopfRunner, metrics: OperatorMetrics
) -> None:
    quota_path = f"/api/v1/namespaces/{NS}/resourcequotas/sandbox-quota"
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
        make_ready(kube, http, "alpha", NS)
        assert http.get(quota_path).json()["spec"]["hard"]["limits.cpu"] == "2"
        quota = {"cpu": "3", "memory": "6Gi", "storage": "20Gi", "concurrentSessions": 3}
        got = http.patch(f"{SB}/alpha", headers=MERGE, json={"spec": {"quota": quota}})
        assert got.status_code == 200
        wait_for(lambda: http.get(quota_path).json()["spec"]["hard"]["limits.cpu"] == "3")
        hard = http.get(quota_path).json()["spec"]["hard"]
        assert hard["requests.memory"] == "6Gi"
        wait_for(lambda: http.get(f"{SB}/alpha").json()["status"]["observedGeneration"] == 2)
        assert phase_of(http, "alpha") == "Ready"  # no detour through Provisioning needed
        # one patch of the quota, no rewrite of anything else
        patches = [r for r in kube.requests if r[0] == "PATCH" and "/resourcequotas/" in r[1]]
        assert len(patches) == 1


def test_cross_org_repo_is_refused_without_creating_anything(
    kube: FakeKube, operator: KopfRunner, metrics: OperatorMetrics
) -> None:
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        body = sandbox_body("cross", repos=[{"giteaRepo": "globex/secret"}])
        assert http.post(SB, json=body).status_code == 201

        status = wait_failed(http, "cross")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "CrossOrgRepo"
        assert "globex" in ready["message"]
        assert http.get(f"/api/v1/namespaces/{NS}").status_code == 404
        assert http.get(f"{SB}/cross").json()["metadata"].get("finalizers") is None
        assert (
            sample(metrics, "sandbox_operator_sandboxes_failed_total", reason="CrossOrgRepo") == 1
        )


def test_a_failed_clone_in_the_pod_fails_the_sandbox(
    kube: FakeKube, operator: KopfRunner, metrics: OperatorMetrics
) -> None:
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("clone")).status_code == 201
        sts_path = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"
        wait_for(lambda: http.get(sts_path).status_code == 200)
        template = http.get(sts_path).json()["spec"]["template"]
        (clone,) = template["spec"]["initContainers"]
        assert clone["terminationMessagePolicy"] == "FallbackToLogsOnError"
        # play the kubelet: the pod's git-clone container failed (and is being retried)
        said = "fatal: could not read from https://bot:s3cret@git.acme.com/acme/web.git"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "pty-server-0",
                "namespace": NS,
                "labels": template["metadata"]["labels"],
            },
            "spec": template["spec"],
        }
        kube.apply(pod)
        status = {
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [
                    {
                        "name": "git-clone",
                        "image": clone["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 1,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {
                            "terminated": {"exitCode": 128, "reason": "Error", "message": said}
                        },
                    }
                ],
            }
        }
        pod_status = f"/api/v1/namespaces/{NS}/pods/pty-server-0/status"
        assert http.patch(pod_status, headers=MERGE, json=status).status_code == 200

        status = wait_failed(http, "clone")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "CloneFailed"
        assert "git clone exited with 128: fatal: could not read" in ready["message"]
        assert "s3cret" not in ready["message"]
        wait_for(
            lambda: (
                sample(metrics, "sandbox_operator_sandboxes_failed_total", reason="CloneFailed")
                == 1
            )
        )


WRITES = {"POST", "PUT", "PATCH", "DELETE"}
MERGE = {"Content-Type": "application/merge-patch+json"}


def phase_of(http: httpx.Client, name: str, base: str = SB) -> str:
    return str(http.get(f"{base}/{name}").json().get("status", {}).get("phase", ""))


def replicas_of(http: httpx.Client, ns: str) -> int | None:
    got = http.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/pty-server")
    return int(got.json()["spec"]["replicas"]) if got.status_code == 200 else None


def wait_failed(http: httpx.Client, name: str) -> dict[str, Any]:
    """The sandbox's status once its phase is Failed."""

    def failed() -> Any:
        status = http.get(f"{SB}/{name}").json().get("status") or {}
        return status if status.get("phase") == "Failed" else None

    return dict(wait_for(failed))


def make_ready(kube: FakeKube, http: httpx.Client, name: str, ns: str, base: str = SB) -> None:
    wait_for(lambda: replicas_of(http, ns) == 1)
    kube.set_ready_replicas(ns, "pty-server", 1)
    wait_for(lambda: phase_of(http, name, base) == "Ready")


def test_restart_resumes_without_writing_anything(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        with running_operator(kube):
            assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
            make_ready(kube, http, "alpha", NS)
        before = http.get(f"{SB}/alpha").json()
        mark = len(kube.requests)
        again = OperatorMetrics()
        with running_operator(kube, metrics=again):
            # the listing, then timer passes (every 0.3 s): several full reconciles
            wait_for(
                lambda: sample(again, "sandbox_operator_reconciles_total", result="unchanged") >= 4
            )
        writes = [r for r in kube.requests[mark:] if r[0] in WRITES]
        assert writes == []
        assert sample(again, "sandbox_operator_reconciles_total", result="changed") == 0
        after = http.get(f"{SB}/alpha").json()
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_an_injected_500_is_retried(
    kube: FakeKube, operator: KopfRunner, metrics: OperatorMetrics
) -> None:
    # more failures than the sandbox's own writes cause watch events: only our retry
    # timers can get past them (kopf does not retry event handlers)
    fault = kube.inject(method="POST", path=r"^/api/v1/namespaces$", status=500, times=5)
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
        make_ready(kube, http, "alpha", NS)
    assert fault.hits == 5
    assert sample(metrics, "sandbox_operator_reconcile_failures_total", error="500") == 5
    assert sample(metrics, "sandbox_operator_reconciles_total", result="error") == 5
    creates = [r for r in kube.requests if r == ("POST", "/api/v1/namespaces")]
    assert len(creates) == 6  # five refused, one made it: no duplicate after success


def test_two_tenants_are_isolated(kube: FakeKube, operator: KopfRunner) -> None:
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "globex"}})
    globex_sb = "/apis/sandbox.openova.io/v1/namespaces/globex/sandboxes"
    globex_ns = "sandbox-dev-at-globex-com"
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("dev")).status_code == 201
        body = sandbox_body(
            "dev", email="dev@globex.com", org="globex", repos=[{"giteaRepo": "globex/api"}]
        )
        assert http.post(globex_sb, json=body).status_code == 201
        make_ready(kube, http, "dev", NS)
        make_ready(kube, http, "dev", globex_ns, base=globex_sb)
        assert http.get(f"{SB}/dev").json()["status"]["workspaceNamespace"] == NS
        assert http.get(f"{globex_sb}/dev").json()["status"]["workspaceNamespace"] == globex_ns
        for ns, org, other in ((NS, "acme", "globex"), (globex_ns, "globex", "acme")):
            for path in (
                f"/api/v1/namespaces/{ns}/configmaps",
                f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
                f"/apis/apps/v1/namespaces/{ns}/statefulsets",
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            ):
                items = http.get(path).json()["items"]
                assert items, path
                for item in items:
                    labels = item["metadata"]["labels"]
                    assert labels["openova.io/organization"] == org
                    assert labels["openova.io/sandbox-namespace"] == org
                    assert other not in str(labels)
            # no object of this org anywhere outside its own namespace
            for path in ("/api/v1/persistentvolumeclaims", "/apis/apps/v1/statefulsets"):
                found = http.get(path, params={"labelSelector": f"openova.io/organization={org}"})
                assert {i["metadata"]["namespace"] for i in found.json()["items"]} == {ns}
        # the repo PVCs follow each tenant's own spec
        assert (
            http.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/repo-web").status_code == 200
        )
        assert (
            http.get(f"/api/v1/namespaces/{globex_ns}/persistentvolumeclaims/repo-web").status_code
            == 404
        )
        # deleting one tenant leaves the other alone
        http.delete(f"{globex_sb}/dev")
        wait_for(lambda: http.get(f"{globex_sb}/dev").status_code == 404)
        assert http.get(f"/api/v1/namespaces/{globex_ns}").status_code == 404
        assert phase_of(http, "dev") == "Ready"
        assert replicas_of(http, NS) == 1


def test_idle_sandbox_is_suspended_and_woken(
    kube: FakeKube, operator: KopfRunner, metrics: OperatorMetrics
) -> None:
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        body = sandbox_body("idle", idleScaling={"enabled": True, "timeoutMinutes": 1})
        assert http.post(SB, json=body).status_code == 201
        make_ready(kube, http, "idle", NS)
        # the terminal server last reported activity five minutes ago
        old = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        got = http.patch(
            f"{SB}/idle/status", headers=MERGE, json={"status": {"lastActivityAt": old}}
        )
        assert got.status_code == 200
        # the status is written before the scale-down, and the metric after both
        wait_for(lambda: phase_of(http, "idle") == "Suspended")
        wait_for(lambda: replicas_of(http, NS) == 0)
        wait_for(lambda: sample(metrics, "sandbox_operator_suspends_total") == 1)
        conditions = http.get(f"{SB}/idle").json()["status"]["conditions"]
        pty = next(c for c in conditions if c["type"] == "PtyReady")
        assert (pty["status"], pty["reason"]) == ("False", "Suspended")
        kube.set_ready_replicas(NS, "pty-server", 0)  # the pod goes away

        # an attach asks for a wake
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        wake = {"metadata": {"annotations": {"openova.io/wake-requested": now}}}
        assert http.patch(f"{SB}/idle", headers=MERGE, json=wake).status_code == 200
        wait_for(lambda: replicas_of(http, NS) == 1)
        assert phase_of(http, "idle") in ("Provisioning", "Suspended")
        kube.set_ready_replicas(NS, "pty-server", 1)
        wait_for(lambda: phase_of(http, "idle") == "Ready")
        wait_for(lambda: sample(metrics, "sandbox_operator_wakes_total") == 1)
        # the wake counts as activity: it is not suspended again right away
        time.sleep(1.0)
        assert phase_of(http, "idle") == "Ready"
        assert sample(metrics, "sandbox_operator_suspends_total") == 1


class OperatorThread:
    """``run_operator`` (leader election and all) on its own thread and loop."""

    def __init__(self, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop_flag = asyncio.Event()
        self.errors: list[BaseException] = []
        self.metrics = OperatorMetrics()
        self.kwargs = kwargs
        self.thread = threading.Thread(target=self._target)

    def _target(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(
                run_operator(
                    load_settings(git_base_url="https://gitea.example.com"),
                    stop_flag=self.stop_flag,
                    metrics=self.metrics,
                    **self.kwargs,
                )
            )
        except BaseException as exc:  # surfaced by stop()
            self.errors.append(exc)
        finally:
            self.loop.close()

    def reconciles(self) -> float:
        return sum(
            sample(self.metrics, "sandbox_operator_reconciles_total", result=r)
            for r in ("changed", "unchanged", "conflict", "error")
        )

    def leading(self) -> bool:
        return sample(self.metrics, "sandbox_operator_leader") == 1

    def __enter__(self) -> OperatorThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_flag.set)
            self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        assert self.errors == []

    def __exit__(self, *exc: object) -> None:
        self.stop()


LEASES = "/apis/coordination.k8s.io/v1/namespaces/catalyst-system/leases"


@pytest.fixture
def control_plane(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "catalyst-system"}})
    return kube


def test_run_operator_leads_serves_metrics_and_stops_on_the_flag(
    control_plane: FakeKube,
) -> None:
    kube = control_plane
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    with (
        OperatorThread(namespace="acme", metrics_port=0, metrics_addr="127.0.0.1") as op,
        httpx.Client(base_url=kube.url, timeout=5) as http,
    ):
        assert http.post(SB, json=sandbox_body("beta")).status_code == 201
        # narrowed to "acme": a sandbox elsewhere is not touched
        other = "/apis/sandbox.openova.io/v1/namespaces/other/sandboxes"
        body = sandbox_body("gamma", email="gamma@acme.com")
        assert http.post(other, json=body).status_code == 201
        wait_for(lambda: http.get(f"/api/v1/namespaces/{NS}").status_code == 200)
        lease = http.get(f"{LEASES}/sandbox-operator").json()
        assert lease["spec"]["holderIdentity"]
        assert lease["spec"]["leaseDurationSeconds"] == 15
        wait_for(lambda: op.metrics.port is not None)
        text = httpx.get(f"http://127.0.0.1:{op.metrics.port}/metrics", timeout=5).text
        assert "sandbox_operator_leader 1.0" in text
        assert 'sandbox_operator_reconciles_total{result="changed"}' in text
        health = httpx.get(f"http://127.0.0.1:{op.metrics.port}/healthz", timeout=5)
        assert (health.status_code, health.text) == (200, "ok\n")
        time.sleep(1.0)
        assert http.get("/api/v1/namespaces/sandbox-gamma-at-acme-com").status_code == 404
        assert http.get(f"{other}/gamma").json().get("status") is None
        op.stop()
        assert http.get(f"{LEASES}/sandbox-operator").json()["spec"].get("holderIdentity") is None


def test_two_operators_never_both_act(control_plane: FakeKube) -> None:
    """Two replicas: only the lease holder reconciles; the other takes over when it
    stops; a leader that loses its lease stops kopf and runs it again on regaining."""
    kube = control_plane
    fast = ElectionTiming(
        lease_duration=2.0, renew_deadline=1.5, renew_interval=0.3, retry_interval=0.2
    )

    def namespace_of(http: httpx.Client, user: str) -> int:
        return http.get(f"/api/v1/namespaces/sandbox-{user}-at-acme-com").status_code

    with (
        OperatorThread(identity="a", timing=fast, metrics_port=None) as a,
        OperatorThread(identity="b", timing=fast, metrics_port=None) as b,
        httpx.Client(base_url=kube.url, timeout=5) as http,
    ):
        wait_for(lambda: a.leading() or b.leading())
        leader, follower = (a, b) if a.leading() else (b, a)
        for user in ("one", "two"):
            body = sandbox_body(user, email=f"{user}@acme.com")
            assert http.post(SB, json=body).status_code == 201
            wait_for(lambda user=user: namespace_of(http, user) == 200)
        assert leader.reconciles() > 0
        assert follower.reconciles() == 0 and not follower.leading()

        leader.stop()  # releases the lease
        wait_for(follower.leading)
        assert http.post(SB, json=sandbox_body("three", email="three@acme.com")).status_code == 201
        wait_for(lambda: namespace_of(http, "three") == 200)
        assert follower.reconciles() > 0

        # someone else holds the lease for a moment: kopf stops, then runs again
        # (a read-modify-write like any client's: the leader renews every 0.3 s, so a
        # write on a stale resourceVersion is refused with 409 and read again)
        def take_lease() -> bool:
            lease = http.get(f"{LEASES}/sandbox-operator").json()
            lease["spec"].update(holderIdentity="intruder", leaseDurationSeconds=1)
            status = http.put(f"{LEASES}/sandbox-operator", json=lease).status_code
            assert status in (200, 409), status
            return status == 200

        wait_for(take_lease)
        wait_for(lambda: not follower.leading())
        wait_for(follower.leading)
        assert http.post(SB, json=sandbox_body("four", email="four@acme.com")).status_code == 201
        wait_for(lambda: namespace_of(http, "four") == 200)
