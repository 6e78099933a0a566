"""An org's namespace made on its first Sandbox (issue 13): opt-in
(SANDBOX_KUBE_CREATE_ORG_NAMESPACES, with the RBAC of the org-namespaces component);
without it the create still answers namespace-not-found."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from contract.conftest import build_sandbox
from openova_sandbox.config import load_settings
from openova_sandbox.domain.errors import Invalid
from openova_sandbox.store.factory import make_store
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube

ROOT = Path(__file__).parents[2]


async def test_the_first_sandbox_of_an_org_creates_its_namespace(kube: FakeKube) -> None:
    store = KubeStore(kubeconfig_path=str(kube.kubeconfig_path), create_namespaces=True)
    await store.start()
    try:
        first = await store.create(build_sandbox("alpha", "newco"))
        assert first.namespace == "newco"
        await store.create(build_sandbox("beta", "newco"))  # the namespace exists now
        assert [s.name for s in await store.list("newco")] == ["beta", "alpha"]
    finally:
        await store.close()
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        labels = http.get("/api/v1/namespaces/newco").json()["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "openova-sandbox-api"
    assert labels["openova.io/org-namespace"] == "true"
    creates = [p for m, p in kube.requests if m == "POST" and p == "/api/v1/namespaces"]
    assert len(creates) == 1


async def test_without_the_setting_the_namespace_must_exist(kube: FakeKube) -> None:
    store = KubeStore(kubeconfig_path=str(kube.kubeconfig_path))
    await store.start()
    try:
        with pytest.raises(Invalid) as caught:
            await store.create(build_sandbox("alpha", "newco"))
        assert caught.value.code == "namespace-not-found"
    finally:
        await store.close()
    assert not [p for m, p in kube.requests if m == "POST" and p == "/api/v1/namespaces"]


def test_the_setting_reaches_the_store() -> None:
    store = make_store(load_settings(store="kube", kube_create_org_namespaces=True))
    assert isinstance(store, KubeStore) and store._create_namespaces is True


def test_the_component_grants_the_api_namespace_creation_only(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = ROOT / "deploy" / "kubernetes"
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(base, overlay)],
                "components": [os.path.relpath(base / "components" / "org-namespaces", overlay)],
            }
        )
    )
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(out) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    role = next(d for d in docs if d["metadata"]["name"] == "openova-sandbox-api-org-namespaces")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]}]
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and "sandbox-config" in d["metadata"]["name"]
    )
    assert config["data"]["SANDBOX_KUBE_CREATE_ORG_NAMESPACES"] == "true"
    assert config["data"]["SANDBOX_GIT_BASE_URL"] == ""  # merged into, not replaced
