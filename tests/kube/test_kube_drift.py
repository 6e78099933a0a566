"""A level-triggered operator (issue 13): a deleted or edited child is put back at once
(the operator watches its children by label), and the conditions say what is missing
meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import kopf
from kopf.testing import KopfRunner
from lightkube import AsyncClient, KubeConfig

from openova_sandbox.controller.kube.handlers import OperatorOptions, build_registry
from openova_sandbox.controller.kube.metrics import OperatorMetrics
from openova_sandbox.controller.kube.reconcile import FINALIZER, reconcile
from openova_sandbox.controller.kube.render import RenderConfig
from openova_sandbox.testing.kubeapi import FakeKube

from .samples import NOW, sandbox
from .test_operator import NS, SB, sandbox_body, wait_for
from .test_reconcile import STATUS_NAMESPACE, cluster, conditions, settled

CONFIG = RenderConfig(git_base_url="https://gitea.example.com")
POLICY = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/sandbox-ingress"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"


def test_a_missing_child_shows_in_the_conditions_and_is_put_back() -> None:
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: "sandbox-dev-at-acme-com"})
    for _ in range(3):  # Pending -> Provisioning -> Ready, one step per pass
        sb = settled(sb, cluster(sb, ready=1), reconcile(sb, cluster(sb, ready=1), NOW, CONFIG))
    assert sb.status.phase == "Ready"
    drifted = cluster(sb, ready=1)
    gone = [k for k in drifted.children if k[0] == "NetworkPolicy"]
    assert gone
    for key in gone:
        del drifted.children[key]
    plan = reconcile(sb, drifted, NOW, CONFIG)
    assert [o["kind"] for o in plan.apply] == ["NetworkPolicy"]
    assert ("RBACReady", "Unknown", "Creating") in conditions(plan)
    assert plan.status is not None and plan.status.phase == "Provisioning"
    assert plan.requeue_after == 0.0  # looked at again at once


@contextmanager
def operator(
    kube: FakeKube,
    *,
    resync: float,
    max_requeue: float = 0.3,
    metrics: OperatorMetrics | None = None,
    informer_cache: bool = True,
    share_grant_secret: str = "",
    pty_url_template: str = "",
    verify_seconds: float = 3600.0,
) -> Iterator[KopfRunner]:
    config = KubeConfig.from_file(kube.kubeconfig_path)
    registry = build_registry(
        OperatorOptions(
            render=CONFIG,
            max_requeue=max_requeue,
            error_backoff=0.1,
            resync_seconds=resync,
            metrics=metrics or OperatorMetrics(),
            informer_cache=informer_cache,
            share_grant_secret=share_grant_secret,
            pty_url_template=pty_url_template,
            verify_seconds=verify_seconds,
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


def ready_sandbox(kube: FakeKube, http: httpx.Client) -> None:
    # no idle checks: once Ready, nothing but the resync or a watch looks at it again
    body = sandbox_body("alpha", idleScaling={"enabled": False})
    assert http.post(SB, json=body).status_code == 201
    wait_for(lambda: http.get(STS).status_code == 200)
    kube.set_ready_replicas(NS, "pty-server", 1)
    wait_for(lambda: phase(http) == "Ready")


def quiet(kube: FakeKube, *, for_seconds: float = 1.5) -> None:
    """Until the operator has asked the API server nothing for ``for_seconds`` (its
    passes after Ready have run out), so what follows is not repaired by one of them."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = len(kube.requests)
        time.sleep(for_seconds)
        if len(kube.requests) == seen:
            return
    raise AssertionError("the operator never went quiet")


def phase(http: httpx.Client) -> str:
    return str((http.get(f"{SB}/alpha").json().get("status") or {}).get("phase", ""))


def test_deleted_children_are_put_back_at_once(kube: FakeKube, monkeypatch: Any) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    # a resync far away and no short requeues: only the child watch can repair in time
    with (
        operator(kube, resync=3600, max_requeue=6),
        httpx.Client(base_url=kube.url, timeout=5) as http,
    ):
        ready_sandbox(kube, http)
        quiet(kube)
        assert http.delete(POLICY).status_code == 200
        wait_for(lambda: http.get(POLICY).status_code == 200, timeout=10)
        quiet(kube)
        assert http.delete(STS).status_code == 200
        wait_for(lambda: http.get(STS).status_code == 200, timeout=10)


def test_an_edited_child_is_repaired_at_once(kube: FakeKube, monkeypatch: Any) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    # a resync far away and no short requeues: only the child watch can repair in time
    with (
        operator(kube, resync=3600, max_requeue=6),
        httpx.Client(base_url=kube.url, timeout=5) as http,
    ):
        ready_sandbox(kube, http)
        quiet(kube)
        merge = {"Content-Type": "application/merge-patch+json"}
        opened = {"spec": {"policyTypes": ["Ingress"], "egress": None}}
        assert http.patch(POLICY, headers=merge, json=opened).status_code == 200
        wait_for(
            lambda: http.get(POLICY).json()["spec"]["policyTypes"] == ["Ingress", "Egress"],
            timeout=10,
        )
        # a pod becoming unready is seen when it happens, not at the next poll
        kube.set_ready_replicas(NS, "pty-server", 0)
        wait_for(lambda: phase(http) == "Provisioning", timeout=10)
