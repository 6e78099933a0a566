"""Previews under the base's RBAC as the fake API server enforces it (kubeapi_rbac.py):
the API's service account writes the previews annotation, the operator's creates a
public preview's Service, NetworkPolicy and HTTPRoute and deletes them when the preview
is no longer wanted, with no refusal."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from openova_sandbox.controller.kube.previews import ANNOTATION
from openova_sandbox.services.kube_previews import KubePreviews
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube
from openova_sandbox.testing.kubeapi_rbac import User

from .test_kube_rbac import OPERATOR, enforced, status_of  # noqa: F401 (a fixture)
from .test_operator import NS, SB, OperatorThread, sandbox_body, wait_for

API = User.service_account("catalyst-system", "sandbox-api")


def test_previews_need_no_grant_the_base_does_not_give(
    enforced: FakeKube,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = enforced
    monkeypatch.setenv("KUBECONFIG", str(kube.add_user("operator-token", OPERATOR)))
    api_config = kube.add_user("api-token", API)
    paths = (
        f"/api/v1/namespaces/{NS}/services/preview-8000",
        f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/preview-8000",
        f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/preview-8000",
    )
    with OperatorThread(metrics_port=None), httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
        sts = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"
        wait_for(lambda: http.get(sts).status_code == 200)
        kube.set_ready_replicas(NS, "pty-server", 1)
        wait_for(lambda: status_of(http, "alpha").get("phase") == "Ready")

        async def start() -> None:  # as the API's (and the MCP server's) account
            store = KubeStore(kubeconfig_path=str(api_config))
            await store.start()
            try:
                sandbox = await store.get("acme", "alpha")
                await KubePreviews(store).start_preview(sandbox, 8000, "serve", wait=0, public=True)
            finally:
                await store.close()

        asyncio.run(start())
        wanted = json.loads(http.get(f"{SB}/alpha").json()["metadata"]["annotations"][ANNOTATION])
        assert [(w["port"], w["public"]) for w in wanted] == [(8000, True)]
        for path in paths:
            wait_for(lambda p=path: http.get(p).status_code == 200)  # type: ignore[misc]
        patch = {"metadata": {"annotations": {ANNOTATION: None}}}
        headers = {"Content-Type": "application/merge-patch+json"}
        assert http.patch(f"{SB}/alpha", json=patch, headers=headers).status_code == 200
        for path in paths:
            wait_for(lambda p=path: http.get(p).status_code == 404)  # type: ignore[misc]
    assert kube.forbidden == []
