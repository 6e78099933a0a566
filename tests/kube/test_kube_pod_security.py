"""Pod Security admission (issue 13): the workspace namespace the operator creates
enforces ``restricted``, and the fake API server now refuses a non-compliant Pod there
as a real one would, so the terminal server's pod is admitted for real, not only by
reading its fields."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from openova_sandbox.controller.kube.render import RenderConfig, render_children, render_namespace
from openova_sandbox.testing.kubeapi import FakeKube

from .samples import sandbox

NS = "sandbox-dev-at-acme-com"
CONFIG = RenderConfig(git_base_url="https://gitea.example.com")


def pod_of_the_statefulset() -> dict[str, Any]:
    sts = next(c for c in render_children(sandbox(), NS, CONFIG) if c["kind"] == "StatefulSet")
    template = sts["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pty-server-0", "labels": template["metadata"]["labels"]},
        "spec": copy.deepcopy(template["spec"]),
    }


@pytest.fixture
def workspace(kube: FakeKube) -> str:
    kube.apply(render_namespace(sandbox(), NS))
    return f"{kube.url}/api/v1/namespaces/{NS}/pods"


def test_the_terminal_servers_pod_is_admitted_under_restricted(workspace: str) -> None:
    answer = httpx.post(workspace, json=pod_of_the_statefulset(), timeout=5)
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize(
    ("breaks", "said"),
    [
        (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (
            lambda s: s["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation",
        ),
        (lambda s: s["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser=0"),
        (
            lambda s: s["containers"][0]["securityContext"].update(
                capabilities={"add": ["SYS_ADMIN"]}
            ),
            "capabilities",
        ),
        (lambda s: s.update(hostNetwork=True), "host namespaces"),
        (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "volume types"),
        (
            lambda s: (
                s["securityContext"].pop("seccompProfile"),
                s["containers"][0]["securityContext"].pop("seccompProfile"),
            ),
            "seccompProfile",
        ),
    ],
)
def test_a_pod_breaking_restricted_is_refused(workspace: str, breaks: Any, said: str) -> None:
    pod = pod_of_the_statefulset()
    breaks(pod["spec"])
    answer = httpx.post(workspace, json=pod, timeout=5)
    assert answer.status_code == 403, answer.text
    message = answer.json()["message"]
    assert 'violates PodSecurity "restricted:latest"' in message and said in message


def test_an_unlabelled_namespace_admits_any_pod(kube: FakeKube) -> None:
    pod = pod_of_the_statefulset()
    pod["spec"]["containers"][0]["securityContext"]["privileged"] = True
    answer = httpx.post(f"{kube.url}/api/v1/namespaces/acme/pods", json=pod, timeout=5)
    assert answer.status_code == 201, answer.text
