"""The operator reads through its informer cache (issue 13): a steady Ready sandbox's
pass asks the API server nothing, where it used to make ~13 reads; a deleted child is
still seen at once, shown in the conditions and put back."""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

import httpx
import pytest

from openova_sandbox.controller.kube.metrics import OperatorMetrics
from openova_sandbox.testing.kubeapi import FakeKube

from .test_kube_drift import POLICY, operator, ready_sandbox
from .test_operator import NS, SB, sample, wait_for


def passes(metrics: OperatorMetrics) -> float:
    return sum(
        sample(metrics, "sandbox_operator_reconciles_total", result=r)
        for r in ("changed", "unchanged", "conflict", "error")
    )


def closed_port() -> int:
    """A local port nothing listens on (bound, then closed: refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def steady_calls(kube: FakeKube, *, informer_cache: bool) -> tuple[Counter[str], float]:
    """The requests (by verb, watches aside) of 20 passes of a settled Ready sandbox
    (resync every 0.2 s, no idle checks), and how many passes that was."""
    metrics = OperatorMetrics()
    with (
        operator(
            kube,
            resync=0.2,
            metrics=metrics,
            informer_cache=informer_cache,
            # as deployed: each pass also checks the share grant key's Secret and asks
            # the terminal server how idle it is (here nothing answers: an unknown,
            # which changes nothing)
            share_grant_secret="operator-grant-secret-" + "z" * 32,
            pty_url_template=f"http://127.0.0.1:{closed_port()}/{{namespace}}",
        ),
        httpx.Client(base_url=kube.url, timeout=5) as http,
    ):
        ready_sandbox(kube, http)
        settled = passes(metrics) + 10  # past the passes that follow its last write
        wait_for(lambda: passes(metrics) >= settled)
        mark, first = len(kube.calls), passes(metrics)
        wait_for(lambda: passes(metrics) >= first + 20)
        calls, done = kube.calls[mark:], passes(metrics) - first
    return Counter(verb for verb, _ in calls if verb != "watch"), done


@pytest.mark.parametrize("informer_cache", [False, True], ids=["direct", "cached"])
def test_requests_per_pass_of_a_steady_ready_sandbox(
    kube: FakeKube, monkeypatch: Any, informer_cache: bool
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    verbs, done = steady_calls(kube, informer_cache=informer_cache)
    per_pass = {verb: n / done for verb, n in sorted(verbs.items())}
    print(f"requests per pass ({'cached' if informer_cache else 'direct'}): {per_pass}")
    assert not {"create", "update", "patch", "delete"} & set(verbs)  # settled: no writes
    if informer_cache:
        assert sum(verbs.values()) == 0, per_pass
    else:
        # the Sandbox, two candidate namespaces, the git Secret, the share grant key's
        # and the probe token's Secrets; one LIST per child kind
        assert per_pass == {"get": 6.0, "list": 9.0}


def test_a_deleted_child_shows_in_the_conditions_until_it_is_back(
    kube: FakeKube, monkeypatch: Any
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    with (
        operator(kube, resync=3600, max_requeue=0.3),
        httpx.Client(base_url=kube.url, timeout=5) as http,
    ):
        ready_sandbox(kube, http)
        # the first recreations fail: meanwhile the status says what is missing
        fault = kube.inject(method="POST", path=r"/networkpolicies$", status=500, times=3)
        assert http.delete(POLICY).status_code == 200

        def rbac() -> tuple[str, str, str]:
            status = http.get(f"{SB}/alpha").json()["status"]
            row = next(c for c in status["conditions"] if c["type"] == "RBACReady")
            return status["phase"], row["status"], row["reason"]

        wait_for(lambda: rbac() == ("Provisioning", "Unknown", "Creating"), timeout=10)
        wait_for(lambda: http.get(POLICY).status_code == 200, timeout=10)
        assert fault.hits == 3
        wait_for(lambda: rbac() == ("Ready", "True", "Created"), timeout=10)


def test_the_uncached_git_secret_is_read_once_per_start(kube: FakeKube, monkeypatch: Any) -> None:
    """``sandbox-git-credentials`` is not ours (not labelled, so not cached): each start
    reads it once, and a restart with nothing changed still writes nothing."""
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    git = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sandbox-git-credentials", "namespace": NS},
        "stringData": {"token": "t"},
    }

    def token_reason(http: httpx.Client) -> str:
        status = http.get(f"{SB}/alpha").json()["status"]
        return str(next(c for c in status["conditions"] if c["type"] == "TokenReady")["reason"])

    with httpx.Client(base_url=kube.url, timeout=5) as http:
        with operator(kube, resync=0.2):
            ready_sandbox(kube, http)
            assert token_reason(http) == "Anonymous"
        with operator(kube, resync=0.2, metrics=(seen := OperatorMetrics())):
            wait_for(lambda: passes(seen) >= 3)  # past the start's direct read
            assert http.post(f"/api/v1/namespaces/{NS}/secrets", json=git).status_code == 201
            first = passes(seen)
            wait_for(lambda: passes(seen) >= first + 10)  # cached passes: not seen
            assert token_reason(http) == "Anonymous"
        with operator(kube, resync=0.2):  # the first pass of a start reads it
            wait_for(lambda: token_reason(http) == "CredentialPresent")
        mark = len(kube.calls)
        metrics = OperatorMetrics()
        with operator(kube, resync=0.2, metrics=metrics):
            wait_for(lambda: passes(metrics) >= 10)
        writes = [c for c in kube.calls[mark:] if c[0] in ("create", "update", "patch", "delete")]
        assert writes == []
        assert token_reason(http) == "CredentialPresent"


def test_each_sandbox_is_still_read_directly_now_and_then(kube: FakeKube, monkeypatch: Any) -> None:
    """What no watch announces (the git credentials Secret here; a deletion while kopf
    re-listed) is seen by the next direct read, at most ``verify_seconds`` away."""
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sandbox-git-credentials", "namespace": NS},
        "stringData": {"token": "t"},
    }
    with (
        operator(kube, resync=0.2, verify_seconds=0.5),
        httpx.Client(base_url=kube.url, timeout=5) as http,
    ):
        ready_sandbox(kube, http)

        def token_reason() -> str:
            status = http.get(f"{SB}/alpha").json()["status"]
            row = next(c for c in status["conditions"] if c["type"] == "TokenReady")
            return str(row["reason"])

        assert token_reason() == "Anonymous"
        assert http.post(f"/api/v1/namespaces/{NS}/secrets", json=secret).status_code == 201
        wait_for(lambda: token_reason() == "CredentialPresent", timeout=10)
