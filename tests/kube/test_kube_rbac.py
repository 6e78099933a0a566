"""The base's RBAC as a real cluster would enforce it (issue 13): the fake API server
authorizes the operator's own service account with the ClusterRole, Roles and bindings
from ``deploy/kubernetes`` (kubeapi_rbac.py), so a verb the operator needs but does not
hold fails here, and binding the workspace role without ``bind`` on it is refused as
the escalation it would be."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from openova_sandbox.testing.kubeapi import FakeKube, run_fake_kube
from openova_sandbox.testing.kubeapi_rbac import User, escalation

from .test_operator import NS, SB, OperatorThread, sandbox_body, wait_for

ROOT = Path(__file__).parents[2]
CRD = ROOT / "deploy" / "crds" / "sandboxes.sandbox.openova.io.yaml"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
OPERATOR = User.service_account("catalyst-system", "sandbox-operator")


def base_rbac() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize base cannot be rendered")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "kubernetes")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] in RBAC_KINDS]


def cluster(objects: list[dict[str, Any]]) -> Iterator[FakeKube]:
    with run_fake_kube(crds=[CRD], namespaces=("default", "acme", "catalyst-system")) as kube:
        for obj in objects:
            kube.apply(obj)
        yield kube


@pytest.fixture
def enforced() -> Iterator[FakeKube]:
    yield from cluster(base_rbac())


@pytest.fixture
def without_bind() -> Iterator[FakeKube]:
    objects = base_rbac()
    for obj in objects:
        if obj["kind"] == "ClusterRole" and obj["metadata"]["name"] == "openova-sandbox-operator":
            obj["rules"] = [r for r in obj["rules"] if "bind" not in r["verbs"]]
    yield from cluster(objects)


def status_of(http: httpx.Client, name: str) -> dict[str, Any]:
    return dict(http.get(f"{SB}/{name}").json().get("status") or {})


def test_the_operator_runs_a_sandbox_end_to_end_with_only_its_own_rbac(
    enforced: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = enforced
    monkeypatch.setenv("KUBECONFIG", str(kube.add_user("operator-token", OPERATOR)))
    with OperatorThread(metrics_port=None), httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
        sts = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"
        wait_for(lambda: http.get(sts).status_code == 200)
        binding = http.get(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings/sandbox"
        )
        assert binding.json()["roleRef"]["name"] == "openova-sandbox-workspace"
        kube.set_ready_replicas(NS, "pty-server", 1)
        wait_for(lambda: status_of(http, "alpha").get("phase") == "Ready")
        http.delete(f"{SB}/alpha")
        wait_for(lambda: http.get(f"{SB}/alpha").status_code == 404)
        assert http.get(f"/api/v1/namespaces/{NS}").status_code == 404
    assert kube.forbidden == []  # every call it made was allowed by its ClusterRole
    # and the fake did enforce: roles are not the operator's to list
    denied = httpx.get(
        f"{kube.url}/apis/rbac.authorization.k8s.io/v1/roles",
        headers={"Authorization": "Bearer operator-token"},
        timeout=5,
    )
    assert denied.status_code == 403
    assert 'cannot list resource "roles"' in denied.json()["message"]


def test_without_bind_the_workspace_binding_is_refused_as_an_escalation(
    without_bind: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = without_bind
    monkeypatch.setenv("KUBECONFIG", str(kube.add_user("operator-token", OPERATOR)))
    with OperatorThread(metrics_port=None), httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
        refused = wait_for(lambda: [f for f in kube.forbidden if "rolebindings" in f[1]])
        assert "attempting to grant RBAC permissions not currently held" in refused[0][2]
        assert status_of(http, "alpha").get("phase") != "Ready"


def test_holding_every_permission_of_a_role_allows_binding_it_without_bind() -> None:
    role = {
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }
    holder = {
        "metadata": {"name": "holder"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    }
    user = User("alice")
    objects: dict[tuple[str, str], dict[Any, dict[str, Any]]] = {
        ("rbac.authorization.k8s.io", "clusterroles"): {
            ("", "reader"): role,
            ("", "holder"): holder,
        },
        ("rbac.authorization.k8s.io", "clusterrolebindings"): {
            ("", "alice"): {
                "metadata": {"name": "alice"},
                "roleRef": {"kind": "ClusterRole", "name": "holder"},
                "subjects": [{"kind": "User", "name": "alice"}],
            }
        },
    }
    binding = {"roleRef": {"kind": "ClusterRole", "name": "reader"}}
    assert escalation(objects, user, binding, "ns") is None
    wider = copy.deepcopy(role)
    wider["rules"][0]["verbs"] = ["get", "delete"]
    objects[("rbac.authorization.k8s.io", "clusterroles")][("", "reader")] = wider
    assert "delete" in (escalation(objects, user, binding, "ns") or "")


async def test_the_api_does_its_work_with_only_its_own_rbac(enforced: FakeKube) -> None:
    """The API's store calls (create, read, list, watch, the wake annotation's update,
    delete) under the API's ClusterRole; its status is the operator's."""
    from contract.conftest import build_sandbox
    from openova_sandbox.domain.errors import BackendForbidden
    from openova_sandbox.domain.model import Sandbox
    from openova_sandbox.store.kube import KubeStore

    kube = enforced
    path = kube.add_user("api-token", User.service_account("catalyst-system", "sandbox-api"))
    store = KubeStore(kubeconfig_path=str(path))
    await store.start()
    try:
        created = await store.create(build_sandbox("alpha", "acme"))
        await store.get("acme", "alpha")
        assert [s.name for s in await store.list("acme")] == ["alpha"]
        assert [s.name for s in await store.list()] == ["alpha"]
        raw = created.to_dict()
        raw["metadata"].setdefault("annotations", {})["openova.io/wake-requested"] = "now"
        updated = await store.update(Sandbox.from_dict(raw))
        assert updated is not None
        stream = store.watch(None)
        first = await anext(stream)
        assert first.object.name == "alpha"
        await stream.aclose()
        raw = updated.to_dict()
        raw["status"] = {"phase": "Ready"}
        with pytest.raises(BackendForbidden):
            await store.update_status(Sandbox.from_dict(raw))  # the operator's, not the API's
        await store.delete("acme", "alpha")
    finally:
        await store.close()
    refused = kube.forbidden
    assert [(m, p.rsplit("/", 1)[-1]) for m, p, _ in refused] == [("PUT", "status")]
