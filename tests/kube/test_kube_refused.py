"""Retries stop on permanent errors (issue 13): an object the API server refuses as
rendered (422 Invalid) fails the sandbox for its generation instead of being retried
forever; the next spec change tries again."""

from __future__ import annotations

from typing import Any

import httpx

from openova_sandbox.controller.kube.metrics import OperatorMetrics
from openova_sandbox.testing.kubeapi import FakeKube

from .test_kube_cache import passes
from .test_kube_drift import operator
from .test_operator import MERGE, NS, SB, make_ready, sample, sandbox_body, wait_failed, wait_for

STS_CREATE = r"^/apis/apps/v1/namespaces/[^/]+/statefulsets$"


def sts_creates(kube: FakeKube) -> int:
    return sum(
        1 for method, path in kube.requests if method == "POST" and path.endswith("/statefulsets")
    )


def test_a_refused_manifest_fails_the_generation_and_is_not_retried(
    kube: FakeKube, monkeypatch: Any
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    metrics = OperatorMetrics()
    refusal = kube.inject(method="POST", path=STS_CREATE, status=422, times=1)
    with (
        operator(kube, resync=0.2, metrics=metrics),
        httpx.Client(base_url=kube.url, timeout=5) as http,
    ):
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
        status = wait_failed(http, "alpha")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "ManifestRefused"
        assert ready["message"].startswith("the API server refused StatefulSet pty-server:")
        assert status["observedGeneration"] == 1
        assert refusal.hits == 1
        wait_for(
            lambda: (
                sample(metrics, "sandbox_operator_sandboxes_failed_total", reason="ManifestRefused")
                == 1
            )
        )
        # passes go on (the resync), none of them tries the StatefulSet again
        seen = passes(metrics)
        wait_for(lambda: passes(metrics) >= seen + 10)
        assert sts_creates(kube) == 1
        assert sample(metrics, "sandbox_operator_reconciles_total", result="error") == 0

        # a new generation is tried again
        quota = {"cpu": "3", "memory": "6Gi", "storage": "20Gi", "concurrentSessions": 3}
        assert http.patch(f"{SB}/alpha", headers=MERGE, json={"spec": {"quota": quota}}).is_success
        make_ready(kube, http, "alpha", NS)
        assert sts_creates(kube) == 2
