"""McpReady in Kubernetes mode says what the operator knows (docs/mcp.md, "Agents
configured automatically"): no MCP server configured is NotApplicable (the ConfigMap
names none), a configured one is Configured once the ConfigMap that names it exists,
with the URL in the message and the fact that the operator does not probe it."""

from __future__ import annotations

import json
from dataclasses import replace

from openova_sandbox.controller.kube.reconcile import STATUS_NAMESPACE, KubeObserved, reconcile
from openova_sandbox.controller.kube.render import MCP_CONFIGMAP, RenderConfig
from openova_sandbox.domain.model import FINALIZER

from .samples import NOW, sandbox
from .test_reconcile import NS, cluster

MCP_URL = "http://sandbox-mcp.catalyst-system.svc/mcp"


def mcp_row(config: RenderConfig, observed: KubeObserved) -> tuple[str, str, str]:
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS})
    plan = reconcile(sb, observed, NOW, config)
    assert plan.status is not None
    (row,) = [c for c in plan.status.conditions if c.type == "McpReady"]
    return row.status, row.reason, row.message


def test_without_an_mcp_server_mcp_is_not_applicable() -> None:
    config = RenderConfig(git_base_url="https://gitea.example.com")
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS})
    observed = cluster(sb, ready=1)
    status, reason, message = mcp_row(config, observed)
    assert (status, reason) == ("True", "NotApplicable")
    assert "SANDBOX_KUBE_MCP_URL" in message
    # and the ConfigMap indeed names no server
    data = json.loads(observed.children[("ConfigMap", MCP_CONFIGMAP)]["data"]["mcp.json"])
    assert data["mcpServers"] == {}


def test_a_server_without_tokens_says_the_agents_get_none() -> None:
    config = RenderConfig(git_base_url="https://gitea.example.com", mcp_url=MCP_URL)
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS})
    status, reason, message = mcp_row(config, cluster(sb, ready=1))
    assert (status, reason) == ("True", "NoToken")
    assert "SANDBOX_ISSUER_KEY" in message


def test_a_configured_server_is_configured_once_its_configmap_exists() -> None:
    config = RenderConfig(git_base_url="https://gitea.example.com", mcp_url=MCP_URL, mcp_token=True)
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS})
    observed = cluster(sb, ready=1)
    status, reason, message = mcp_row(config, observed)
    assert (status, reason) == ("True", "Configured")
    assert MCP_URL in message and "not probed" in message
    missing = {k: v for k, v in observed.children.items() if k != ("ConfigMap", MCP_CONFIGMAP)}
    status, reason, _ = mcp_row(config, replace(observed, children=missing))
    assert (status, reason) == ("Unknown", "Creating")
