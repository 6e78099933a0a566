"""Kubernetes mode end to end: the sessions API over the kube store (`sandbox api`), the
operator (kopf for real), both against the fake API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube
from openova_sandbox.testing.server import serve_in_thread

from .test_operator import running_operator, wait_for

SESSIONS = "/api/v1/sandbox/sessions"
NS = "sandbox-dev-at-acme-com"
CHILDREN = (
    f"/api/v1/namespaces/{NS}/resourcequotas/sandbox-quota",
    f"/api/v1/namespaces/{NS}/serviceaccounts/sandbox",
    f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings/sandbox",
    f"/api/v1/namespaces/{NS}/persistentvolumeclaims/repo-web",
    f"/api/v1/namespaces/{NS}/persistentvolumeclaims/home",
    f"/api/v1/namespaces/{NS}/configmaps/sandbox-mcp-config",
    f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server",
    f"/api/v1/namespaces/{NS}/services/pty-server",
    f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/pty-server",
    f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/sandbox-ingress",
)


class Api:
    def __init__(self, url: str, issuer: EmbeddedIssuer) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        token = issuer.mint(sub="u-1", email="dev@acme.com", org="acme")
        self.auth = {"Authorization": f"Bearer {token}"}


def api_over(kube: FakeKube, tmp_path: Path, **overrides: object) -> Iterator[Api]:
    # repos are cloned from the configured git server (create refuses them without one)
    settings = load_settings(
        data_dir=tmp_path / "data",
        store="kube",
        git_base_url="https://gitea.example.com",
        **overrides,
    )
    deps = build_api(settings, store=KubeStore(kubeconfig_path=str(kube.kubeconfig_path)))
    issuer = EmbeddedIssuer.load(tmp_path / "data")
    with serve_in_thread(create_app(deps)) as server:
        api = Api(server.url, issuer)
        yield api
        api.http.close()


@pytest.fixture
def api(kube: FakeKube, tmp_path: Path) -> Iterator[Api]:
    yield from api_over(kube, tmp_path)


def test_api_created_sandbox_is_provisioned_and_deleted_with_every_child(
    kube: FakeKube, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    created = api.http.post(
        SESSIONS, headers=api.auth, json={"agent": "aider", "name": "alpha", "repo": "acme/web"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "pending"
    with running_operator(kube), httpx.Client(base_url=kube.url, timeout=5) as cluster:
        wait_for(lambda: cluster.get(CHILDREN[-4]).status_code == 200)
        kube.set_ready_replicas(NS, "pty-server", 1)  # play the StatefulSet controller

        def item() -> dict:
            return api.http.get(f"{SESSIONS}/alpha", headers=api.auth).json()

        wait_for(lambda: item().get("status") == "running")
        got = item()
        assert [c["type"] for c in got["conditions"]] == [
            "NamespaceReady",
            "RBACReady",
            "PVCsReady",
            "PtyReady",
            "RouteReady",
            "McpReady",
            "TokenReady",
            "Ready",
        ]
        for path in CHILDREN:
            assert cluster.get(path).status_code == 200, path
        namespace = cluster.get(f"/api/v1/namespaces/{NS}").json()
        assert namespace["metadata"]["labels"]["openova.io/sandbox"] == "alpha"
        listed = api.http.get(SESSIONS, headers=api.auth).json()["sandboxes"]
        assert [s["id"] for s in listed] == ["alpha"]

        assert api.http.delete(f"{SESSIONS}/alpha", headers=api.auth).status_code == 204
        wait_for(lambda: api.http.get(f"{SESSIONS}/alpha", headers=api.auth).status_code == 404)
        assert cluster.get(f"/api/v1/namespaces/{NS}").status_code == 404
        for path in CHILDREN:
            assert cluster.get(path).status_code == 404, path


def test_crd_missing_is_a_503_on_create_and_get_and_an_empty_list(
    bare_kube: FakeKube, tmp_path: Path
) -> None:
    for api in api_over(bare_kube, tmp_path):
        assert api.http.get(SESSIONS, headers=api.auth).json() == {"sandboxes": []}
        for method, path, body in (
            ("POST", SESSIONS, {"agent": "aider"}),
            ("GET", f"{SESSIONS}/x", None),
        ):
            resp = api.http.request(method, path, headers=api.auth, json=body)
            assert resp.status_code == 503, resp.text
            assert resp.headers["retry-after"] == "30"
            assert resp.json() == {
                "error": "sandbox-crd-not-installed",
                "detail": "sandboxes.sandbox.openova.io CRD missing on this cluster",
            }


def test_api_server_faults_map_to_503_and_403_to_a_visible_500(
    kube: FakeKube, tmp_path: Path
) -> None:
    for api in api_over(kube, tmp_path):
        # a read of the store (lists are answered from the informer's copy, issue 11)
        kube.inject(method="GET", path=".*/sandboxes/some-box$", status=500, times=2)
        resp = api.http.get(f"{SESSIONS}/some-box", headers=api.auth)
        assert resp.status_code == 503
        assert resp.json()["error"] == "sandbox-backend-unavailable"
        kube.inject(method="POST", path=".*/sandboxes$", status=403)
        resp = api.http.post(SESSIONS, headers=api.auth, json={"agent": "aider"})
        assert resp.status_code == 500
        assert resp.json()["error"] == "create-failed"
        assert resp.json()["detail"]


def test_byos_answers_as_disabled_in_cluster_mode(kube: FakeKube, tmp_path: Path) -> None:
    """Even fully configured: tokens kept per replica would never reach a sandbox pod."""
    settings = load_settings(
        data_dir=tmp_path / "data",
        store="kube",
        byos_claude_code_client_id="client-1",
        byos_claude_code_authz_url="https://provider.example/authorize",
        byos_claude_code_token_url="https://provider.example/token",
    )
    deps = build_api(settings, store=KubeStore(kubeconfig_path=str(kube.kubeconfig_path)))
    issuer = EmbeddedIssuer.load(tmp_path / "data")
    byos = "/api/v1/sandbox/byos/claude-code"
    with serve_in_thread(create_app(deps)) as server:
        api = Api(server.url, issuer)
        status = api.http.get(f"{byos}/status", headers=api.auth)
        assert status.json() == {"connected": False, "disabled": True}
        started = api.http.post(f"{byos}/start", headers=api.auth, json={})
        assert started.status_code == 403
        assert started.json()["error"] == "byos disabled by operator policy"
        assert "cluster mode" in started.json()["detail"]
        assert api.http.delete(byos, headers=api.auth).status_code == 403
        api.http.close()


def test_create_checks_the_agents_the_sandbox_image_carries(kube: FakeKube, tmp_path: Path) -> None:
    """Kubernetes mode asks SANDBOX_IMAGE_AGENTS, not this process's PATH; the pods'
    environment is not this process's either, so variables are not checked here."""
    for api in api_over(kube, tmp_path, image_agents="opencode claude-code"):
        refused = api.http.post(SESSIONS, headers=api.auth, json={"agent": "aider"})
        assert refused.status_code == 400
        assert refused.json()["error"] == "agent-not-installed"
        assert "SANDBOX_IMAGE_AGENTS: opencode, claude-code" in refused.json()["detail"]
        assert api.http.get(SESSIONS, headers=api.auth).json() == {"sandboxes": []}
        # in the image, though no model variables are set in this process
        created = api.http.post(SESSIONS, headers=api.auth, json={"agent": "opencode"})
        assert created.status_code == 201, created.text
        # every image has a shell
        shell = api.http.post(SESSIONS, headers=api.auth, json={"agent": "shell"})
        assert shell.status_code == 201, shell.text
        cross = api.http.post(
            SESSIONS, headers=api.auth, json={"agent": "shell", "repo": "other/web"}
        )
        assert cross.json()["error"] == "cross-org-repo"
