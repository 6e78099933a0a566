"""Each sandbox's MCP token in Kubernetes mode (docs/mcp.md, "Server and tokens"): the
operator (kopf for real against the fake API server) signs it with the control plane's
issuer key and keeps it in the Secret ``sandbox-mcp-token`` of the workspace namespace;
the pod reads it through a ``secretKeyRef`` (never a literal) beside ``SANDBOX_MCP_URL``;
settled passes do not write it again; a token for other capabilities, another sandbox,
another key or near its expiry is replaced and the pod rolled; and the MCP server's own
check accepts the token the operator wrote."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from kopf.testing import KopfRunner
from lightkube import AsyncClient, KubeConfig

from openova_sandbox.api.terminal_edge.standalone import mcp_env
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import Settings
from openova_sandbox.controller.kube.mcp_token import ensure_mcp_token
from openova_sandbox.controller.kube.metrics import OperatorMetrics
from openova_sandbox.controller.kube.pod_secret import RESTARTED_AT
from openova_sandbox.controller.kube.render import RenderConfig
from openova_sandbox.domain.model import Sandbox
from openova_sandbox.services.mcp_tokens import McpTokens, PodMcpTokens, pod_mcp_tokens
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

SECRET = f"/api/v1/namespaces/{NS}/secrets/sandbox-mcp-token"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/pty-server"
MCP_URL = "http://sandbox-mcp.catalyst-system.svc/mcp"
ISSUER = EmbeddedIssuer.generate(issuer_url="https://sandbox.example.com")


def source(issuer: EmbeddedIssuer = ISSUER, **kwargs: object) -> PodMcpTokens:
    return PodMcpTokens(McpTokens(issuer, None, url=MCP_URL), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


@pytest.fixture
def operator(
    kube: FakeKube, metrics: OperatorMetrics, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KopfRunner]:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig_path))
    render = RenderConfig(git_base_url="https://gitea.example.com", mcp_url=MCP_URL, mcp_token=True)
    with running_operator(kube, metrics=metrics, render=render, mcp_tokens=source()) as runner:
        yield runner


def token_in(http: httpx.Client) -> str:
    return secret_in(http, SECRET, "token")


def test_a_sandbox_pod_gets_its_own_mcp_token(
    kube: FakeKube, operator: KopfRunner, metrics: OperatorMetrics
) -> None:
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        assert http.post(SB, json=sandbox_body("alpha")).status_code == 201
        token = wait_for(lambda: token_in(http))
        uid = http.get(f"{SB}/alpha").json()["metadata"]["uid"]
        # what the MCP server checks (signature, audience, purpose) names this sandbox
        claims = asyncio.run(McpTokens(ISSUER, None).verify(token))
        assert (claims.namespace, claims.sandbox, claims.uid) == ("acme", "alpha", uid)
        assert claims.owner_email == "dev@acme.com"

        sts = wait_for(lambda: http.get(STS).json() if http.get(STS).status_code == 200 else None)
        (main,) = sts["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in main["env"]}
        assert env["SANDBOX_MCP_URL"]["value"] == MCP_URL
        assert env["SANDBOX_MCP_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "sandbox-mcp-token",
            "key": "token",
        }
        assert token not in json.dumps(sts)

        make_ready(kube, http, "alpha", NS)
        conditions = {c["type"]: c for c in http.get(f"{SB}/alpha").json()["status"]["conditions"]}
        assert conditions["McpReady"]["status"] == "True"
        assert conditions["McpReady"]["reason"] == "Configured"
        assert "sandbox-mcp-token" in conditions["McpReady"]["message"]
        settled = sample(metrics, "sandbox_operator_reconciles_total", result="unchanged")
        wait_for(
            lambda: (
                sample(metrics, "sandbox_operator_reconciles_total", result="unchanged")
                > settled + 5
            )
        )
        writes = [r for r in kube.requests if r[0] in ("PATCH", "PUT") and r[1] == SECRET]
        assert writes == []
        assert token_in(http) == token


def test_a_token_that_no_longer_fits_is_replaced_and_the_pod_rolled(kube: FakeKube) -> None:
    config = KubeConfig.from_file(kube.kubeconfig_path)
    body = sandbox_body("alpha") | {
        "metadata": {"name": "alpha", "namespace": "acme", "uid": "uid-1"}
    }
    sandbox = Sandbox.from_dict(body)
    narrowed = Sandbox.from_dict(body | {"spec": {**body["spec"], "capabilities": ["session.*"]}})
    rotated = EmbeddedIssuer.generate(issuer_url="https://sandbox.example.com")
    other_key = source(rotated)
    with httpx.Client(base_url=kube.url, timeout=5) as http:
        bare_statefulset(http, NS)

        async def passes() -> list[bool]:
            client = AsyncClient(config=config, trust_env=False)
            mine = source()
            try:
                return [
                    await ensure_mcp_token(client, src, sb, NS, labels={})
                    for src, sb in (
                        (mine, sandbox),  # created
                        (mine, sandbox),  # still good: kept
                        (mine, narrowed),  # other capabilities: replaced
                        (mine, narrowed),  # kept
                        (other_key, narrowed),  # the key was rotated: replaced
                    )
                ]
            finally:
                await client.close()

        assert asyncio.run(passes()) == [True, False, True, False, True]
        claims = asyncio.run(McpTokens(rotated, None).verify(token_in(http)))
        assert claims.capabilities == ("session.*",)
        template = http.get(STS).json()["spec"]["template"]
        assert RESTARTED_AT in template["metadata"]["annotations"]


def test_a_token_near_its_expiry_is_not_current() -> None:
    sandbox = Sandbox.from_dict(
        sandbox_body("alpha") | {"metadata": {"name": "alpha", "namespace": "acme", "uid": "u"}}
    )
    fresh = source()
    token = fresh.issue(sandbox)
    assert asyncio.run(fresh.current(token, sandbox)) is True
    # the same token, seen 24 days later: within the renewal window of its 30 days
    later = source(clock=lambda: time.time() + timedelta(days=24).total_seconds())
    assert asyncio.run(later.current(token, sandbox)) is False
    other = Sandbox.from_dict(
        sandbox_body("alpha") | {"metadata": {"name": "alpha", "namespace": "acme", "uid": "v"}}
    )
    assert asyncio.run(fresh.current(token, other)) is False  # re-created: a new uid


def test_the_operator_signs_only_with_the_issuer_key_and_a_server_to_name() -> None:
    assert pod_mcp_tokens(Settings(store="kube")) is None
    assert pod_mcp_tokens(Settings(store="kube", kube_mcp_url=MCP_URL)) is None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    assert pod_mcp_tokens(Settings(store="kube", issuer_key=pem)) is None
    assert pod_mcp_tokens(Settings(store="kube", issuer_key=pem, kube_mcp_url=MCP_URL))


def test_the_pod_hands_the_token_to_its_agents_only_with_the_url() -> None:
    assert mcp_env(Settings(mcp_url=MCP_URL)) == {}
    assert mcp_env(Settings(mcp_token="t")) == {}
    assert mcp_env(Settings(mcp_url=MCP_URL, mcp_token="t")) == {
        "SANDBOX_MCP_URL": MCP_URL,
        "SANDBOX_MCP_TOKEN": "t",
    }
