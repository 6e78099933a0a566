"""Each sandbox's share grant key in Kubernetes mode: the operator (kopf for real against
the fake API server) writes the Secret ``sandbox-share-grant`` of the workspace
namespace with the key derived from its grant secret for that sandbox only, the pod
reads it through a ``secretKeyRef`` (never a literal), settled passes do not write it
again, and a rotated grant secret rewrites it and rolls the pod."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kopf.testing import KopfRunner
from lightkube import AsyncClient, KubeConfig

from openova_sandbox.config import Settings
from openova_sandbox.controller.kube.metrics import OperatorMetrics
from openova_sandbox.controller.kube.operator import render_config
from openova_sandbox.controller.kube.pod_secret import RESTARTED_AT
from openova_sandbox.controller.kube.render import RenderConfig
from openova_sandbox.controller.kube.share_grant_key import ensure_share_grant_key
from openova_sandbox.domain.model import Sandbox
from openova_sandbox.domain.share_grant import derive_key
from openova_sandbox.testing.kubeapi import FakeKube

from .test_operator import (
    NS,
    SB,
    bare_statefulset,
    make_ready,
    running_operator,
    sample,
    sandbox_body,
    secret_in,
    wait_for,
)

SECRET = f"/api/v1/namespaces/{NS}/secrets/sandbox-share-grant"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"
GRANT_SECRET = "operator-grant-secret-" + "z" * 32


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


@pytest.fixture
def operator(
    kube: FakeKube, metrics: OperatorMetrics, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KopfRunner]:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    render = RenderConfig(git_base_url="https://gitea.example.com", share_grants=True)
    with running_operator(
        kube, metrics=metrics, render=render, share_grant_secret=GRANT_SECRET
    ) as runner:
        yield runner


def key_in(http: httpx.Client) -> str:
    return secret_in(http, SECRET, "key")


def test_a_sandbox_gets_its_own_grant_key_secret(
    kube: FakeKube, operator: KopfRunner, metrics: OperatorMetrics
) -> None:
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
        key = wait_for(lambda: key_in(http))
        assert key == derive_key(GRANT_SECRET, "acme", "alpha")
        assert key != derive_key(GRANT_SECRET, "acme", "beta")
        assert GRANT_SECRET not in json.dumps(http.get(SECRET).json())
        sts = wait_for(lambda: http.get(STS).json() if http.get(STS).status_code == 200 else None)
        (main,) = sts["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in main["env"]}
        assert env["SANDBOX_SHARE_GRANT_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "sandbox-share-grant",
            "key": "key",
        }
        assert key not in json.dumps(sts) and GRANT_SECRET not in json.dumps(sts)

        make_ready(kube, http, "alpha", NS)
        settled = sample(metrics, "sandbox_operator_reconciles_total", result="unchanged")
        wait_for(  # a few more reconciles (from the informer cache: few requests)
            lambda: (
                sample(metrics, "sandbox_operator_reconciles_total", result="unchanged")
                > settled + 5
            )
        )
        writes = [r for r in kube.requests if r[0] in ("PATCH", "PUT") and r[1] == SECRET]
        assert writes == []
        assert key_in(http) == key


def test_a_rotated_secret_rewrites_the_key_and_rolls_the_pod(kube: FakeKube) -> None:
    config = KubeConfig.from_file(kube.kubeconfig_path)
    sandbox = Sandbox.from_dict(
        sandbox_body("alpha") | {"metadata": {"name": "alpha", "namespace": "acme"}}
    )
    rotated = "rotated-grant-secret-" + "r" * 32
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        bare_statefulset(http, NS)

        async def passes() -> list[bool]:
            client = AsyncClient(config=config, trust_env=False)
            try:
                return [
                    await ensure_share_grant_key(client, secret, sandbox, NS, labels={})
                    for secret in (GRANT_SECRET, GRANT_SECRET, rotated, rotated)
                ]
            finally:
                await client.close()

        assert asyncio.run(passes()) == [True, False, True, False]
        assert key_in(http) == derive_key(rotated, "acme", "alpha")
        template = http.get(STS).json()["spec"]["template"]
        assert RESTARTED_AT in template["metadata"]["annotations"]


def test_without_a_grant_secret_the_operator_renders_no_key() -> None:
    assert render_config(Settings(store="kube")).share_grants is False
    configured = Settings(store="kube", share_grant_secret=GRANT_SECRET)
    assert render_config(configured).share_grants is True


def test_the_api_and_the_operator_read_the_same_grant_secret() -> None:
    import yaml

    root = Path(__file__).parents[2] / "deploy" / "kubernetes"
    refs = {}
    for name, deployment in (("api.yaml", "sandbox-api"), ("operator.yaml", "sandbox-operator")):
        (obj,) = [
            o
            for o in yaml.safe_load_all((root / name).read_text())
            if o and o["kind"] == "Deployment" and o["metadata"]["name"] == deployment
        ]
        (container,) = obj["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        refs[name] = env["SANDBOX_SHARE_GRANT_SECRET"]["valueFrom"]["secretKeyRef"]
    assert (
        refs["api.yaml"]
        == refs["operator.yaml"]
        == {
            "name": "sandbox-share-grant-secret",
            "key": "secret",
            "optional": True,
        }
    )
