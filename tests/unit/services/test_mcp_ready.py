"""McpReady and the MCP variables of a spawn in embedded mode (docs/mcp.md, "Agents
configured automatically"): each spawn gets /mcp's URL and a fresh MCP token that
verifies for its sandbox; McpReady says TokenNotIssued with the reason when no token can
be issued, and Serving otherwise, also before the server listens (a restart must not
turn Ready sandboxes Provisioning); a runtime without an MCP server says NotApplicable.
The controller's row is what the terminal host said."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.controller.reconcile import Observed, reconcile
from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.model import (
    ANNOTATION_SUB,
    FINALIZER,
    ObjectMeta,
    Quota,
    Sandbox,
    SandboxSpec,
)
from openova_sandbox.events.bus import InProcessBus
from openova_sandbox.services.mcp_tokens import McpTokens
from openova_sandbox.services.sessions import SessionsPolicy, SessionsService
from openova_sandbox.services.terminals import TerminalHostAdapter, TerminalsService
from openova_sandbox.store.memory import MemoryStore
from openova_sandbox.terminal.registry import TerminalRegistry

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def box(name: str = "box", *, uid: str = "uid-1", email: str = "dev@acme.com") -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(
            name=name,
            namespace="acme",
            uid=uid,
            annotations={ANNOTATION_SUB: "sub-dev"} if email else {},
            finalizers=(FINALIZER,),
        ),
        spec=SandboxSpec(owner_email=email, org_slug="acme", agent_catalogue=("tool",)),
    )


def service(tmp_path: Path, tokens: McpTokens | None) -> TerminalsService:
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([{"slug": "tool", "binary": "cat"}]))
    settings = load_settings(data_dir=tmp_path, store="memory", agents_path=str(agents))
    catalogue = load_catalogue(agents)
    sessions = SessionsService(
        store=MemoryStore(),
        catalogue=catalogue,
        policy=SessionsPolicy(default_namespace="", quota=Quota()),
        bus=InProcessBus(),
    )
    registry = TerminalRegistry(catalogue=catalogue, base_env={"PATH": "/usr/bin:/bin"})
    return TerminalsService(
        registry=registry, sessions=sessions, settings=settings, mcp_tokens=tokens
    )


@pytest.fixture
def tokens() -> McpTokens:
    return McpTokens(EmbeddedIssuer.generate(), lookup=None)


def test_without_an_mcp_server_nothing_is_given_and_mcp_is_not_applicable(tmp_path):
    svc = service(tmp_path, None)
    assert svc.mcp_state(box()) is None
    assert "SANDBOX_MCP_TOKEN" not in svc.spawn_request(box(), "tool").env
    plan = reconcile(box(), Observed(workspace_exists=True, terminal_serving=True), NOW)
    assert plan.status is not None
    row = {c.type: c for c in plan.status.conditions}["McpReady"]
    assert (row.status, row.reason) == ("True", "NotApplicable")


async def test_each_spawn_gets_the_url_and_a_fresh_token_for_its_sandbox(tmp_path, tokens):
    svc = service(tmp_path, tokens)
    assert "SANDBOX_MCP_URL" not in svc.spawn_request(box(), "tool").env  # not yet known
    tokens.listening("0.0.0.0", 8123)
    first = svc.spawn_request(box(), "tool").env
    assert first["SANDBOX_MCP_URL"] == "http://127.0.0.1:8123/mcp"
    claims = await tokens.verify(first["SANDBOX_MCP_TOKEN"])
    assert (claims.namespace, claims.sandbox, claims.uid) == ("acme", "box", "uid-1")
    other = svc.spawn_request(box("other", uid="uid-2"), "tool").env
    assert (await tokens.verify(other["SANDBOX_MCP_TOKEN"])).sandbox == "other"
    # the spawn's environment as the registry builds it carries them to the process
    env = svc.registry.dry_run(svc._context(box()), svc.spawn_request(box(), "tool")).env
    assert env["SANDBOX_MCP_URL"] == "http://127.0.0.1:8123/mcp"
    assert (await tokens.verify(env["SANDBOX_MCP_TOKEN"])).uid == "uid-1"


def test_mcp_ready_serving_or_why_not(tmp_path, tokens):
    svc = service(tmp_path, tokens)
    before = svc.mcp_state(box())
    assert before is not None and before[:2] == ("True", "Serving") and "/mcp" in before[2]
    tokens.listening("127.0.0.1", 8123)
    assert svc.mcp_state(box()) == before  # the same row: listening writes no status
    # a sandbox without an owner gets no token: the agent starts without MCP, and says so
    orphan = box("orphan", email="")
    state = svc.mcp_state(orphan)
    assert state is not None and state[:2] == ("False", "TokenNotIssued")
    assert "has no owner" in state[2]
    assert svc.spawn_request(orphan, "tool").env == {}
    # not stored yet (no uid): the same, with the token service's reason
    state = svc.mcp_state(box("new", uid=""))
    assert state is not None and state[1] == "TokenNotIssued" and "no uid" in state[2]


def test_the_controller_shows_what_the_terminal_host_says(tmp_path, tokens):
    """A sandbox made Ready by a server that listened, reconciled by the next server
    process before it listens (its controller starts first): no status write, no phase
    change, and none once it listens on another port."""
    before_restart = service(tmp_path, tokens)
    tokens.listening("127.0.0.1", 8123)
    host = TerminalHostAdapter(before_restart.registry, mcp_state=before_restart.mcp_state)
    ready = box()
    observed = Observed(workspace_exists=True, terminal_serving=True, mcp=host.mcp_state(ready))
    plan = reconcile(ready, observed, NOW)
    assert plan.status is not None and plan.status.phase == "Ready"
    ready = ready.with_status(plan.status)
    row = {c.type: c for c in plan.status.conditions}["McpReady"]
    assert (row.status, row.reason) == ("True", "Serving")

    restarted = McpTokens(EmbeddedIssuer.generate(), lookup=None)  # a new process
    svc = service(tmp_path, restarted)
    host = TerminalHostAdapter(svc.registry, mcp_state=svc.mcp_state)
    for listening in (False, True):
        if listening:
            restarted.listening("127.0.0.1", 9321)
        observed = Observed(workspace_exists=True, terminal_serving=True, mcp=host.mcp_state(ready))
        assert reconcile(ready, observed, NOW).status is None, listening
    orphan = box("orphan", email="")
    plan = reconcile(
        orphan,
        Observed(workspace_exists=True, terminal_serving=True, mcp=host.mcp_state(orphan)),
        NOW,
    )
    assert plan.status is not None and plan.status.phase != "Ready"
    row = {c.type: c for c in plan.status.conditions}["McpReady"]
    assert (row.status, row.reason) == ("False", "TokenNotIssued")
    # a host without an MCP server: McpReady is not applicable
    assert TerminalHostAdapter(svc.registry).mcp_state(ready) is None
