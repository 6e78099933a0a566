"""The CRD's CEL rules and pruning (issue 13), on the fake API server, which now
evaluates ``x-kubernetes-validations`` (cel-python) and prunes unknown fields of the
objects the schema closes, as a real API server does."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from openova_sandbox.testing.kubeapi import FakeKube

SB = "/apis/sandbox.openova.io/v1/namespaces/acme/sandboxes"
MERGE = {"Content-Type": "application/merge-patch+json"}


def body(name: str, **quota: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sandbox.openova.io/v1",
        "kind": "Sandbox",
        "metadata": {"name": name},
        "spec": {
            "owner": {"email": "dev@acme.com", "orgRef": {"slug": "acme"}},
            "quota": {
                "cpu": "2",
                "memory": "4Gi",
                "storage": "20Gi",
                "concurrentSessions": 3,
                **quota,
            },
        },
    }


@pytest.fixture
def http(kube: FakeKube) -> Any:
    with httpx.Client(base_url=kube.url, timeout=5) as client:
        yield client


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("cpu", "0", "quota.cpu must be at least 10m"),
        ("cpu", "0.0", "quota.cpu must be at least 10m"),
        ("cpu", "5m", "quota.cpu must be at least 10m"),
        ("cpu", "0m", "quota.cpu must be at least 10m"),
        ("memory", "1", "quota.memory must be at least 1Mi"),
        ("memory", "512Ki", "quota.memory must be at least 1Mi"),
        ("memory", "0Gi", "quota.memory must be at least 1Mi"),
        ("storage", "0", "quota.storage must be at least 1Mi"),
    ],
)
def test_too_small_quantities_are_refused(
    http: httpx.Client, field: str, value: str, said: str
) -> None:
    answer = http.post(SB, json=body("small", **{field: value}))
    assert answer.status_code == 422, answer.text
    assert said in answer.json()["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("cpu", "10m"), ("cpu", "0.5"), ("memory", "1G"), ("memory", "64Mi"), ("storage", "1.5Gi")],
)
def test_valid_quantities_are_accepted(http: httpx.Client, field: str, value: str) -> None:
    answer = http.post(SB, json=body("fine", **{field: value}))
    assert answer.status_code == 201, answer.text


def test_the_owner_is_immutable(http: httpx.Client) -> None:
    assert http.post(SB, json=body("alpha")).status_code == 201
    moved = {"spec": {"owner": {"email": "eve@acme.com", "orgRef": {"slug": "acme"}}}}
    answer = http.patch(f"{SB}/alpha", headers=MERGE, json=moved)
    assert answer.status_code == 422, answer.text
    assert "spec.owner is immutable" in answer.json()["message"]
    # other changes and status writes still go through
    assert (
        http.patch(
            f"{SB}/alpha", headers=MERGE, json={"spec": {"planId": "sandbox-pro"}}
        ).status_code
        == 200
    )
    status = http.patch(f"{SB}/alpha/status", headers=MERGE, json={"status": {"phase": "Pending"}})
    assert status.status_code == 200, status.text
    assert http.get(f"{SB}/alpha").json()["spec"]["owner"]["email"] == "dev@acme.com"


def test_unknown_fields_inside_known_objects_are_pruned(http: httpx.Client) -> None:
    doc = body("typo")
    doc["spec"]["idleScaling"] = {"timeoutMinute": 5}  # a typo of timeoutMinutes
    doc["spec"]["quota"]["gpu"] = "1"
    doc["spec"]["futureField"] = {"kept": True}  # spec's own level keeps new fields
    doc["unknownTopLevel"] = 1
    answer = http.post(SB, json=doc)
    assert answer.status_code == 201, answer.text
    stored = http.get(f"{SB}/typo").json()
    assert stored["spec"]["idleScaling"] == {"enabled": True, "timeoutMinutes": 30}
    assert "gpu" not in stored["spec"]["quota"]
    assert stored["spec"]["futureField"] == {"kept": True}
    assert "unknownTopLevel" not in stored
