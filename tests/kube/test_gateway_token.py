"""Each sandbox's model-gateway token in Kubernetes mode, end to end: the operator (kopf
for real against the fake API server) holds a SQLite ledger file that the test opens
too, as the gateway would.

What it proves: a Sandbox gets the Secret ``sandbox-gateway-token`` and its pod a
``secretKeyRef`` to it; the token authenticates in the ledger as that sandbox, owner and
org; later passes do not issue again; a token the ledger lost is issued again (and the
pod rolled); deleting the sandbox revokes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kopf.testing import KopfRunner

from openova_sandbox.config import Settings
from openova_sandbox.controller.kube.gateway_token import open_ledger
from openova_sandbox.controller.kube.metrics import OperatorMetrics
from openova_sandbox.controller.kube.operator import render_config
from openova_sandbox.controller.kube.pod_secret import RESTARTED_AT
from openova_sandbox.controller.kube.render import RenderConfig
from openova_sandbox.domain.ledger import GatewayIdentity
from openova_sandbox.store.sql_ledger import SqlLedger
from openova_sandbox.testing.kubeapi import FakeKube

from .test_operator import (
    MERGE,
    NS,
    SB,
    make_ready,
    running_operator,
    sample,
    sandbox_body,
    secret_in,
    wait_for,
)

SECRET = f"/api/v1/namespaces/{NS}/secrets/sandbox-gateway-token"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"


def authenticate(url: str, token: str) -> GatewayIdentity | None:
    """What a gateway process (a ledger of its own, nothing cached) says of ``token``."""

    async def check() -> GatewayIdentity | None:
        ledger = SqlLedger(url)
        try:
            return await ledger.authenticate(token)
        finally:
            await ledger.close()

    return asyncio.run(check())


def revoke(url: str, namespace: str, name: str) -> None:
    async def go() -> None:
        ledger = SqlLedger(url)
        try:
            await ledger.revoke(namespace, name)
        finally:
            await ledger.close()

    asyncio.run(go())


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


@pytest.fixture
def operator(
    kube: FakeKube, ledger_url: str, metrics: OperatorMetrics, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KopfRunner]:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    render = RenderConfig(git_base_url="https://gitea.example.com", model_gateway_token=True)
    with running_operator(
        kube, metrics=metrics, render=render, ledger=SqlLedger(ledger_url)
    ) as runner:
        yield runner


def token_in(http: httpx.Client) -> str:
    return secret_in(http, SECRET, "token")


def test_a_sandbox_gets_its_token_secret_and_delete_revokes_it(
    kube: FakeKube, operator: KopfRunner, ledger_url: str, metrics: OperatorMetrics
) -> None:
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
        token = wait_for(lambda: token_in(http))
        identity = authenticate(ledger_url, token)
        assert identity == GatewayIdentity(
            sandbox="alpha", namespace="acme", owner_sub="", owner_email="dev@acme.com", org="acme"
        )
        secret = http.get(SECRET).json()
        assert secret["metadata"]["labels"]["openova.io/sandbox-namespace"] == "acme"

        # the pod reads it from the Secret; the token is nowhere in the StatefulSet
        sts = wait_for(lambda: http.get(STS).json() if http.get(STS).status_code == 200 else None)
        (main,) = sts["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in main["env"]}
        assert env["SANDBOX_MODEL_GATEWAY_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "sandbox-gateway-token",
            "key": "token",
        }
        assert token not in json.dumps(sts)

        # settled passes (Ready, idle checks) keep the Secret and the token
        make_ready(kube, http, "alpha", NS)
        settled = sample(metrics, "sandbox_operator_reconciles_total", result="unchanged")
        wait_for(  # a few more reconciles (from the informer cache: few requests)
            lambda: (
                sample(metrics, "sandbox_operator_reconciles_total", result="unchanged")
                > settled + 5
            )
        )
        assert token_in(http) == token
        assert authenticate(ledger_url, token) is not None
        creates = [r for r in kube.requests if r[0] == "POST" and r[1].endswith("/secrets")]
        patches = [r for r in kube.requests if r[0] == "PATCH" and r[1] == SECRET]
        assert patches == []
        assert len(creates) <= 2  # this Secret once (and the idle probe's, when asked)

        # the ledger lost it (a restored database): issued again, the pod rolled
        revoke(ledger_url, "acme", "alpha")
        http.patch(f"{SB}/alpha", headers=MERGE, json={"metadata": {"annotations": {"poke": "1"}}})
        renewed = wait_for(lambda: (t := token_in(http)) != token and t)
        assert authenticate(ledger_url, renewed) == identity
        assert authenticate(ledger_url, token) is None
        # the Secret is written first, the pod template stamped right after it
        wait_for(
            lambda: (
                RESTARTED_AT
                in (http.get(STS).json()["spec"]["template"]["metadata"].get("annotations") or {})
            )
        )

        # deleting the sandbox revokes its token
        http.delete(f"{SB}/alpha")
        wait_for(lambda: http.get(f"{SB}/alpha").status_code == 404)
        assert authenticate(ledger_url, renewed) is None


def test_without_a_database_the_operator_renders_no_token() -> None:
    settings = Settings(store="kube", database_url="")
    assert open_ledger(settings) is None
    assert render_config(settings).model_gateway_token is False
    configured = Settings(store="kube", database_url="sqlite+aiosqlite:///x.db")
    assert render_config(configured).model_gateway_token is True
