"""Every sandbox terminal runs in the sandbox's own HOME, seeded from the agent's row
before it starts; a restarted primary agent resumes; the HOME goes with the sandbox.

Real PTYs and processes through the terminals service, with a stand-in agent (a small
Python script that prints what it was given) in an override row, so the wiring is
checked without a real agent CLI (tests/integration/agents/test_real_agents.py does
that with real ones).
"""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from pathlib import Path
from typing import Any

from openova_sandbox.api.terminal_edge.standalone import build_standalone_app
from openova_sandbox.config import load_settings
from openova_sandbox.controller.local import LocalRuntime, home_path, workspace_path
from openova_sandbox.controller.reconcile import EnsureWorkspace, RemoveWorkspace, StopTerminals
from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.model import ObjectMeta, Quota, Sandbox, SandboxSpec
from openova_sandbox.events.bus import InProcessBus
from openova_sandbox.services.sessions import SessionsPolicy, SessionsService
from openova_sandbox.services.terminals import (
    TerminalHostAdapter,
    TerminalsService,
    prepare_spawn,
)
from openova_sandbox.store.memory import MemoryStore
from openova_sandbox.terminal.registry import TerminalRegistry
from openova_sandbox.terminal.session import TerminalSession

# prints argv, a few variables and its HOME's files as one JSON line, then waits
PROBE = """
import json, os, sys
home = os.environ["HOME"]
files = sorted(
    os.path.relpath(os.path.join(d, f), home) for d, _, fs in os.walk(home) for f in fs
)
names = ("HOME", "PWD", "TOOL_MODEL", "TOOL_GATEWAY", "TOOL_FIXED")
print("PROBE " + json.dumps({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in names},
      "files": files}), flush=True)
sys.stdin.readline()
"""

ROW = {
    "slug": "tool",
    "binary": sys.executable,
    "defaultArgs": ["-c", PROBE],
    "requiredEnv": [],
    "env": {
        "TOOL_MODEL": "openai/${SANDBOX_AGENT_MODEL}",
        "TOOL_GATEWAY": "${LLM_GATEWAY_URL}",  # not configured: left out
        "TOOL_FIXED": "1",
    },
    "homeFiles": [
        {"path": ".tool/config.json", "content": '{"model": "${SANDBOX_AGENT_MODEL}"}'},
        {"path": ".toolrc", "content": "cwd=${PWD}\n"},
    ],
    "resumeArgs": ["--continue"],
}


def sandbox(name: str = "box") -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(name=name, namespace="acme"),
        spec=SandboxSpec(owner_email="dev@acme.com", org_slug="acme", agent_catalogue=("tool",)),
    )


def service(tmp_path: Path, server_home: Path) -> TerminalsService:
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([ROW]))
    settings = load_settings(
        data_dir=tmp_path / "data",
        store="memory",
        openai_base_url="http://127.0.0.1:9/v1",
        openai_api_key="sk-test",
        agent_model="coder-7b",
    )
    catalogue = load_catalogue(agents)
    sessions = SessionsService(
        store=MemoryStore(),
        catalogue=catalogue,
        policy=SessionsPolicy(default_namespace="", quota=Quota()),
        bus=InProcessBus(),
    )
    registry = TerminalRegistry(
        catalogue=catalogue, base_env={"PATH": "/usr/bin:/bin", "HOME": str(server_home)}
    )
    return TerminalsService(registry=registry, sessions=sessions, settings=settings)


async def probe(session: TerminalSession) -> dict[str, Any]:
    viewer = session.attach()
    seen = b""
    async with asyncio.timeout(20):
        while b"\n" not in seen.partition(b"PROBE ")[2]:
            chunk = await viewer.next_bytes()
            assert chunk is not None, f"the stand-in ended early: {seen!r}"
            seen += chunk
    session.detach(viewer)
    line = seen.partition(b"PROBE ")[2].split(b"\n")[0]
    result: dict[str, Any] = json.loads(line)
    return result


async def finish(session: TerminalSession) -> None:
    session.write(b"\r")  # the stand-in exits on its line
    async with asyncio.timeout(20):
        await session.wait_exited()


async def test_the_primary_agent_runs_in_the_sandboxs_own_seeded_home(tmp_path):
    server_home = tmp_path / "server-home"
    server_home.mkdir()
    svc = service(tmp_path, server_home)
    box = sandbox()
    data = tmp_path / "data"
    workspace = workspace_path(data, "acme", "box")
    workspace.mkdir(parents=True)
    home = home_path(data, "acme", "box")
    assert home == data / "homes" / "acme" / "box"
    try:
        first = await probe(svc.primary(box))
        assert first["argv"] == []  # never ran here: a fresh start
        assert first["env"] == {
            "HOME": str(home),
            "PWD": str(workspace),
            "TOOL_MODEL": "openai/coder-7b",
            "TOOL_GATEWAY": None,
            "TOOL_FIXED": "1",
        }
        assert {".tool/config.json", ".toolrc", ".gitconfig"} <= set(first["files"])
        assert json.loads((home / ".tool" / "config.json").read_text()) == {"model": "coder-7b"}
        assert (home / ".toolrc").read_text() == f"cwd={workspace}\n"
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE((home / ".toolrc").stat().st_mode) == 0o600

        # the user edits a file; the agent exits and is started again: it resumes, and
        # the edit is kept
        (home / ".toolrc").write_text("mine\n")
        await finish(svc.primary(box))
        again = await probe(svc.primary(box))
        assert again["argv"] == ["--continue"]
        assert (home / ".toolrc").read_text() == "mine\n"

        # an extra terminal with the same agent starts fresh, in the same HOME
        extra = await svc.open_extra(box, "tool", token="")
        session = svc.registry.get("acme/box", extra["id"])
        other = await probe(session)
        assert other["argv"] == []
        assert other["env"]["HOME"] == str(home)
    finally:
        await svc.registry.close()
    assert list(server_home.iterdir()) == []  # nothing landed in the server's HOME


async def test_sandboxes_do_not_share_a_home_and_a_deleted_one_takes_its_home(tmp_path):
    server_home = tmp_path / "server-home"
    server_home.mkdir()
    svc = service(tmp_path, server_home)
    data = tmp_path / "data"
    runtime = LocalRuntime(TerminalHostAdapter(svc.registry), data_dir=data, git_base_url="")
    one, two = sandbox("one"), sandbox("two")
    for box in (one, two):
        await runtime.execute(box, EnsureWorkspace())
        assert stat.S_IMODE(home_path(data, "acme", box.name).stat().st_mode) == 0o700
    try:
        homes = [(await probe(svc.primary(box)))["env"]["HOME"] for box in (one, two)]
        assert homes == [str(home_path(data, "acme", "one")), str(home_path(data, "acme", "two"))]
        # an agent may leave a folder it cannot write to: deleting still takes it
        locked = home_path(data, "acme", "one") / ".cache" / "locked"
        locked.mkdir(parents=True)
        (locked / "f").write_text("x")
        locked.chmod(0o500)
        await runtime.execute(one, StopTerminals())
        await runtime.execute(one, RemoveWorkspace())
        assert not home_path(data, "acme", "one").exists()
        assert not workspace_path(data, "acme", "one").exists()
        assert home_path(data, "acme", "two").is_dir()  # the other sandbox keeps its own
    finally:
        await svc.registry.close()


async def test_the_standalone_terminal_server_seeds_the_pods_home(tmp_path):
    """`sandbox pty-server` (one sandbox, in its pod): HOME is the pod's home volume,
    seeded by the same hook; its primary session resumes like embedded mode's."""
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([ROW]))
    workdir = tmp_path / "workspace"
    workdir.mkdir()
    pod_home = tmp_path / "home-volume"  # made by the hook, as on a fresh volume
    settings = load_settings(
        data_dir=tmp_path / "data",
        agents_path=str(agents),
        pty_sandbox_id="box",
        pty_default_agent="tool",
        pty_workdir=str(workdir),
        pty_owner_email="dev@acme.com",
        openai_base_url="http://gateway.local/v1",
        agent_model="coder-7b",
    )
    registry = TerminalRegistry(catalogue=load_catalogue(agents), base_env={"PATH": "/bin"})

    async def deny(token: str) -> Any:
        raise AssertionError("not used")

    build_standalone_app(
        settings,
        authenticate=deny,
        registry=registry,
        prepare_spawn=prepare_spawn,
        home=str(pod_home),
    )
    try:
        first = await probe(registry.open("box", "box"))
        assert first["argv"] == []
        assert first["env"]["HOME"] == str(pod_home)
        assert first["env"]["TOOL_MODEL"] == "openai/coder-7b"
        assert {".tool/config.json", ".toolrc", ".gitconfig"} <= set(first["files"])
        await finish(registry.get("box", "box"))
        registry.forget("box", "box")
        assert (await probe(registry.open("box", "box")))["argv"] == ["--continue"]
    finally:
        await registry.close()
