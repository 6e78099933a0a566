"""`sandbox agents install|list|remove` as a user runs them: real installs from the npm
registry and PyPI into a data dir, and a sandbox terminal starting what was installed.

Installs are real, so these take seconds each; the session's agent cache
(support/agents_cache.py) installs opencode once, with the CLI, for every test that
needs it, this file's install test included.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from openova_sandbox.agents.installer import Installer
from openova_sandbox.agents.paths import AgentPaths
from openova_sandbox.agents.versions import probe_version
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.config import load_settings
from openova_sandbox.domain.catalogue import PIP, AgentPackage, AgentSpec, Catalogue
from openova_sandbox.terminal.registry import SandboxContext, SessionRequest
from support.agents_cache import node_problem, run_cli, skip_or_fail
from support.fake_npm import fake_npm

OPENCODE_PIN = "1.18.33"
# the test process's model settings must not decide what `list` reports as missing
MODEL_ENV = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "test-key"}


@pytest.fixture
def npm_agents():
    problem = node_problem()
    if problem:
        skip_or_fail(problem)


def agents_json(data_dir: Path, *extra: str) -> dict[str, dict]:
    out = run_cli("agents", "list", "--json", "--data-dir", str(data_dir), *extra, env=MODEL_ENV)
    assert out.returncode == 0, out.stderr
    return {a["slug"]: a for a in json.loads(out.stdout)["agents"]}


def snapshot(data_dir: Path) -> tuple[list[str], list[str], str]:
    paths = AgentPaths.of(data_dir)
    return (
        sorted(os.listdir(paths.npm)),
        sorted(os.listdir(paths.bin)),
        os.readlink(paths.link("opencode")),
    )


def test_install_opencode_then_list_it_managed(
    tmp_path, npm_agents, agents_cache, installed_agents_dir
):
    """The install is the session's agent cache's own run of `sandbox agents install`
    into a new data dir (support/agents_cache.py): the same command a user runs, made
    once per session instead of once more here."""
    agents_cache.ensure("opencode")
    out, data = agents_cache.installs["opencode"], agents_cache.data_dir
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Node.js v")
    assert any(f"opencode-ai@{OPENCODE_PIN}" in line for line in lines)
    link = AgentPaths.of(data).link("opencode")
    # (the cache may have installed another agent in the same call)
    assert f"Installed opencode {OPENCODE_PIN}: {link}" in lines
    assert (data.stat().st_mode & 0o777) == 0o700  # a new data dir is private

    opencode = agents_json(data)["opencode"]
    assert opencode == {
        "slug": "opencode",
        "label": "OpenCode",
        "kind": "agent",
        "installed": True,
        "version": OPENCODE_PIN,
        "source": "managed",
        "path": str(link),
        "missing": [],
        "installable": True,
        "package": f"opencode-ai@{OPENCODE_PIN}",
        "manualInstall": None,
    }
    # installing it again changes nothing (in a copy: the cache stays as it is)
    copy = installed_agents_dir(tmp_path / "data", "opencode")
    before = snapshot(copy)
    again = run_cli("agents", "install", f"opencode@{OPENCODE_PIN}", "--data-dir", str(copy))
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stdout
    assert snapshot(copy) == before


def test_a_failed_install_leaves_no_trace(tmp_path, npm_agents, installed_agents_dir):
    data = installed_agents_dir(tmp_path / "data", "opencode")
    before = snapshot(data)
    out = run_cli("agents", "install", "opencode@0.0.0-nope", "--data-dir", str(data))
    assert out.returncode == 1
    assert "error: opencode@0.0.0-nope: npm install opencode-ai@0.0.0-nope failed" in out.stderr
    assert "No matching version found" in out.stderr
    assert snapshot(data) == before
    assert agents_json(data)["opencode"]["version"] == OPENCODE_PIN  # the previous one runs
    removed = run_cli("agents", "remove", "opencode", "--data-dir", str(data))
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == f"removed opencode {OPENCODE_PIN}"
    # (the session's agent cache may hold other agents beside it: they stay)
    assert [n for n in os.listdir(AgentPaths.of(data).npm) if n.startswith("opencode-")] == []
    gone = agents_json(data)["opencode"]
    assert gone["source"] != "managed"
    assert gone["path"] != str(AgentPaths.of(data).link("opencode"))


async def test_a_sandbox_terminal_starts_the_managed_agent(
    tmp_path, npm_agents, installed_agents_dir
):
    data = installed_agents_dir(tmp_path / "data", "opencode", share=True)
    settings = load_settings(
        data_dir=data,
        store="memory",
        agents_path=str(tmp_path / "none.json"),
        **{
            "openai_base_url": MODEL_ENV["OPENAI_BASE_URL"],
            "openai_api_key": MODEL_ENV["OPENAI_API_KEY"],
        },
    )
    registry = build_embedded(settings).terminals.registry
    # the server's own PATH is untouched; its terminals look in the managed bin dir first
    assert registry.path.split(os.pathsep)[0] == str(AgentPaths.of(data).bin)
    assert str(AgentPaths.of(data).bin) not in os.environ.get("PATH", "")
    workdir = tmp_path / "work"
    workdir.mkdir()
    registry.add_sandbox(
        SandboxContext(sandbox_id="sb", workdir=str(workdir), env=MODEL_ENV, session_limit=2)
    )
    session = registry.create("sb", SessionRequest(agent="opencode", extra_args=("--version",)))
    viewer = session.attach()
    seen = viewer.first.data
    try:
        async with asyncio.timeout(30):
            while OPENCODE_PIN.encode() not in seen:
                chunk = await viewer.next_bytes()
                assert chunk is not None, f"the agent ended before its version: {seen!r}"
                seen += chunk
    finally:
        await registry.close()


def test_node_missing_or_too_old_is_said_before_anything(tmp_path):
    old = fake_npm(tmp_path / "old", node="v18.19.0")
    data = tmp_path / "data"
    out = run_cli("agents", "install", "qwen-code", "--data-dir", str(data), env={"PATH": str(old)})
    assert out.returncode == 1
    assert "Node.js v18.19.0" in out.stderr and "too old" in out.stderr
    assert "Node.js 20 or newer" in out.stderr
    none = tmp_path / "none"
    none.mkdir()
    out = run_cli("agents", "install", "opencode", "--data-dir", str(data), env={"PATH": str(none)})
    assert out.returncode == 1
    assert "node and npm are not on the server's PATH" in out.stderr
    assert not (data / "agents" / "npm").exists()


def test_manual_and_unknown_agents_say_what_to_do(tmp_path):
    data = tmp_path / "data"
    out = run_cli(
        "agents", "install", "cursor-agent", "little-coder", "nope", "--data-dir", str(data)
    )
    assert out.returncode == 1
    assert "curl https://cursor.com/install" in out.stderr
    assert "little-coder has no package" in out.stderr
    assert "no agent 'nope' in the catalogue" in out.stderr
    bad = run_cli("agents", "install", "opencode@--evil", "--data-dir", str(data))
    assert (bad.returncode, "is not a version" in bad.stderr) == (1, True)
    nothing = run_cli("agents", "remove", "opencode", "--data-dir", str(data))
    assert nothing.returncode == 0
    assert "not installed by this server" in nothing.stdout


def test_a_pip_agent_gets_its_own_venv(tmp_path):
    """A real PyPI install into its own venv (a small package standing in for aider,
    whose install takes over a minute)."""
    spec = AgentSpec(slug="cowsay", binary="cowsay", package=AgentPackage(PIP, "cowsay", "6.1"))
    installer = Installer(tmp_path / "data", Catalogue(agents={"cowsay": spec}))
    lines: list[str] = []
    result = installer.install("cowsay", progress=lines.append)
    paths = AgentPaths.of(tmp_path / "data")
    [venv] = paths.install_dirs("cowsay")
    assert venv.parent == paths.venvs
    assert (result.version, result.path) == ("6.1", str(paths.link("cowsay")))
    assert os.readlink(paths.link("cowsay")) == f"../venvs/{venv.name}/bin/cowsay"
    assert probe_version(result.path) == "6.1"
    said = subprocess.run([result.path, "-t", "moo"], capture_output=True, text=True, check=True)
    assert "moo" in said.stdout
    assert any("cowsay==6.1" in line for line in lines)
    assert installer.install("cowsay").changed is False
    assert installer.remove("cowsay") is True
    assert not venv.exists()
