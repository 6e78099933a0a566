"""Issue 11: the controller's sweep asks ``agent_problem`` of every sandbox every 3 s;
the spawn's checks are run once per agent (and owner connection) per second, not once
per sandbox, and the answer still follows the agent: a binary removed or restored is
seen after at most that second, and a per-sandbox start failure is still per sandbox."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from openova_sandbox.config import load_settings
from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.errors import SpawnFailed
from openova_sandbox.domain.model import ObjectMeta, Quota, Sandbox, SandboxSpec
from openova_sandbox.events.bus import InProcessBus
from openova_sandbox.services import terminals as terminals_module
from openova_sandbox.services.sessions import SessionsPolicy, SessionsService
from openova_sandbox.services.terminals import TerminalsService
from openova_sandbox.terminal.registry import TerminalRegistry


class CountingRegistry(TerminalRegistry):
    dry_runs = 0

    def dry_run(self, context, request):  # type: ignore[no-untyped-def]
        self.dry_runs += 1
        return super().dry_run(context, request)


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    binary = tmp_path / "bin" / "tool"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexec cat\n")
    binary.chmod(0o755)
    rows = [{"slug": "tool", "binary": str(binary), "defaultArgs": [], "requiredEnv": []}]
    (tmp_path / "agents.json").write_text(json.dumps(rows))
    return binary


def _service(tmp_path: Path) -> tuple[TerminalsService, CountingRegistry]:
    settings = load_settings(data_dir=tmp_path / "data", store="memory")
    catalogue = load_catalogue(tmp_path / "agents.json")
    registry = CountingRegistry(catalogue=catalogue)
    sessions = SessionsService(
        store=None,  # type: ignore[arg-type]
        catalogue=catalogue,
        policy=SessionsPolicy(default_namespace="", quota=Quota()),
        bus=InProcessBus(),
    )
    return TerminalsService(registry=registry, sessions=sessions, settings=settings), registry


def _box(name: str) -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(name=name, namespace="acme"),
        spec=SandboxSpec(owner_email="a@acme.com", org_slug="acme", agent_catalogue=("tool",)),
    )


def test_a_thousand_sandboxes_cost_one_dry_run(tmp_path: Path, agent: Path) -> None:
    svc, registry = _service(tmp_path)
    boxes = [_box(f"b{i}") for i in range(1000)]
    assert all(svc.agent_problem(b) is None for b in boxes)
    assert registry.dry_runs == 1  # before: 1000


def test_the_answer_follows_the_agent_within_the_memo(
    tmp_path: Path, agent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(terminals_module, "DRY_RUN_SECONDS", 0.05)
    svc, _ = _service(tmp_path)
    assert svc.agent_problem(_box("a")) is None
    agent.rename(agent.with_name("gone"))
    deadline = time.monotonic() + 5
    while (problem := svc.agent_problem(_box("a"))) is None:
        assert time.monotonic() < deadline
    assert "tool" in problem
    agent.with_name("gone").rename(agent)
    while svc.agent_problem(_box("a")) is not None:
        assert time.monotonic() < deadline
    # a start failure belongs to its sandbox, not to the agent
    svc._start_failed(_box("a"), SpawnFailed("exec format error"))
    assert svc.agent_problem(_box("a")) == "exec format error"
    assert svc.agent_problem(_box("b")) is None
