"""Install planning and the installer's guarantees, with a fake `npm` and `node` on a
PATH the test controls (real registry installs: tests/integration/agents)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from openova_sandbox.agents.installer import (
    AgentNotFound,
    InstallBusy,
    Installer,
    InstallFailed,
    NotInstallable,
    node_version,
    parse_target,
    plan_install,
)
from openova_sandbox.agents.paths import AgentPaths, current_install
from openova_sandbox.domain.catalogue import NPM, PIP, AgentPackage, Catalogue, load_catalogue
from openova_sandbox.domain.errors import Invalid
from support.fake_npm import fake_node, fake_npm, path_with

CATALOGUE = load_catalogue(None)


# ---------------------------------------------------------------------- planning
def test_parse_target():
    assert parse_target("opencode") == ("opencode", None)
    assert parse_target(" opencode@1.18.33 ") == ("opencode", "1.18.33")
    assert parse_target("opencode@latest") == ("opencode", "latest")
    for bad in ("opencode@", "opencode@--registry=http://evil", "opencode@1 2", "@1.0"):
        with pytest.raises(Invalid):
            parse_target(bad)


def test_plan_uses_the_pinned_version_unless_one_is_given():
    plan = plan_install(CATALOGUE, "opencode")
    assert (plan.manager, plan.spec, plan.binary, plan.pinned) == (
        NPM,
        "opencode-ai@1.18.33",
        "opencode",
        True,
    )
    assert plan_install(CATALOGUE, "opencode", "1.2.3").spec == "opencode-ai@1.2.3"
    assert plan_install(CATALOGUE, "qwen-code").spec == "@qwen-code/qwen-code@0.15.10"
    aider = plan_install(CATALOGUE, "aider")
    assert (aider.manager, aider.spec) == (PIP, "aider-chat==0.86.2")


def test_plan_refuses_unknown_and_manual_agents():
    with pytest.raises(AgentNotFound) as unknown:
        plan_install(CATALOGUE, "nope")
    assert unknown.value.code == "agent-not-found"
    assert "opencode" in unknown.value.detail  # names the known ones
    with pytest.raises(AgentNotFound):
        plan_install(CATALOGUE, "sovereign-shell")  # terminal-only, not an API agent
    for slug in ("cursor-agent", "little-coder"):
        with pytest.raises(NotInstallable) as manual:
            plan_install(CATALOGUE, slug)
        assert manual.value.code == "agent-not-installable"
        assert manual.value.detail == CATALOGUE.get(slug).manual_install
    with pytest.raises(NotInstallable, match="nothing to install"):
        plan_install(CATALOGUE, "shell")


def test_an_override_row_keeps_the_builtin_package_when_it_runs_the_same_binary(tmp_path):
    override = tmp_path / "agents.json"
    override.write_text(
        json.dumps(
            [
                {"slug": "opencode", "binary": "opencode", "defaultArgs": ["--x"]},
                {"slug": "qwen-code", "binary": "/opt/qwen/bin/qwen"},
                {"slug": "aider", "binary": "my-aider"},
            ]
        )
    )
    catalogue = load_catalogue(override)
    assert plan_install(catalogue, "opencode").spec == "opencode-ai@1.18.33"
    with pytest.raises(NotInstallable, match="/opt/qwen/bin/qwen"):
        plan_install(catalogue, "qwen-code")
    with pytest.raises(NotInstallable, match="my-aider"):
        plan_install(catalogue, "aider")


# ---------------------------------------------------------------------- Node.js
def test_node_missing_is_said_with_what_to_do(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InstallFailed) as exc:
        node_version(str(empty))
    assert "node and npm are not on the server's PATH" in exc.value.detail
    assert "Node.js 20 or newer" in exc.value.detail
    only_npm = fake_npm(tmp_path / "npm-only", node=None)
    with pytest.raises(InstallFailed, match="but node is not on"):
        node_version(str(only_npm))


def test_node_too_old_or_odd(tmp_path):
    bin_dir = fake_npm(tmp_path / "bin", node="v18.19.0")
    with pytest.raises(InstallFailed) as exc:
        node_version(str(bin_dir))
    assert "Node.js v18.19.0" in exc.value.detail
    assert "too old" in exc.value.detail
    assert "20 or newer" in exc.value.detail
    fake_node(bin_dir, "not a version")
    with pytest.raises(InstallFailed, match="did not answer a version"):
        node_version(str(bin_dir))
    fake_node(bin_dir, "v20.0.0")
    assert node_version(str(bin_dir)) == (20, "v20.0.0")
    fake_node(bin_dir, "v22.3.1")
    assert node_version(str(bin_dir))[0] == 22


def test_install_stops_at_old_node_before_touching_anything(tmp_path):
    bin_dir = fake_npm(tmp_path / "bin", node="v18.19.0")
    installer = Installer(tmp_path / "data", CATALOGUE, path=str(bin_dir))
    with pytest.raises(InstallFailed, match="too old"):
        installer.install("opencode")
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------- installing
@pytest.fixture
def npm_env(tmp_path):
    """A fake npm/node first on the installer's PATH, and the log of npm's calls."""
    bin_dir = fake_npm(tmp_path / "fakebin")
    log = tmp_path / "npm.log"
    env = {**os.environ, "FAKE_NPM_LOG": str(log), "npm_config_prefix": "/usr/evil"}
    return {"path": path_with(bin_dir), "env": env, "log": log}


def npm_calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def make_installer(tmp_path, npm_env, **kw) -> Installer:
    return Installer(
        tmp_path / "data",
        kw.pop("catalogue", CATALOGUE),
        path=npm_env["path"],
        env=npm_env["env"],
        **kw,
    )


def run_link(data_dir: Path, binary: str) -> str:
    link = AgentPaths.of(data_dir).link(binary)
    return subprocess.run([link], capture_output=True, text=True, check=True).stdout.strip()


def test_install_lays_out_a_prefix_and_links_the_binary(tmp_path, npm_env):
    lines: list[str] = []
    result = make_installer(tmp_path, npm_env).install("opencode", progress=lines.append)
    paths = AgentPaths.of(tmp_path / "data")
    assert result.changed
    assert (result.slug, result.version) == ("opencode", "1.18.33")
    assert result.path == str(paths.link("opencode"))
    assert run_link(tmp_path / "data", "opencode") == "opencode-ai 1.18.33"
    [install_dir] = paths.install_dirs("opencode")
    assert install_dir.parent == paths.npm
    assert paths.current_dir("opencode") == install_dir
    assert current_install(tmp_path / "data", CATALOGUE.get("opencode")).version == "1.18.33"
    # npm is asked for a prefix install, never a global one, and nothing redirects it
    [call] = npm_calls(npm_env["log"])
    assert call["args"][:3] == ["install", "--prefix", str(install_dir)]
    assert {"--no-audit", "--no-fund"} <= set(call["args"])
    assert "-g" not in call["args"] and "--global" not in call["args"]
    assert "npm_config_prefix" not in call["env"]
    assert call["args"][-1] == "opencode-ai@1.18.33"
    # its own install script is approved for npm's allowScripts policy
    package = json.loads((install_dir / "package.json").read_text())
    assert package["allowScripts"] == {"opencode-ai": True}
    # progress: Node, what is installed where, npm's own lines, the outcome
    assert lines[0].startswith("Node.js v20.11.1 found")
    assert any("opencode-ai@1.18.33" in line and str(install_dir) in line for line in lines)
    assert "fetching opencode-ai@1.18.33" in lines
    assert lines[-1] == f"Installed opencode 1.18.33: {paths.link('opencode')}"


def test_installing_the_installed_version_does_nothing(tmp_path, npm_env):
    installer = make_installer(tmp_path, npm_env)
    installer.install("opencode")
    lines: list[str] = []
    again = installer.install("opencode", "1.18.33", progress=lines.append)
    assert not again.changed
    assert len(npm_calls(npm_env["log"])) == 1
    assert any("already installed" in line for line in lines)


def test_another_version_replaces_the_install(tmp_path, npm_env):
    installer = make_installer(tmp_path, npm_env)
    installer.install("opencode")
    result = installer.install("opencode", "1.18.30")
    assert (result.changed, result.version) == (True, "1.18.30")
    assert run_link(tmp_path / "data", "opencode") == "opencode-ai 1.18.30"
    assert len(AgentPaths.of(tmp_path / "data").install_dirs("opencode")) == 1  # old one gone


def test_a_failed_install_leaves_the_previous_one_as_it_was(tmp_path, npm_env):
    installer = make_installer(tmp_path, npm_env)
    installer.install("opencode")
    paths = AgentPaths.of(tmp_path / "data")
    before = (paths.install_dirs("opencode"), os.readlink(paths.link("opencode")))
    with pytest.raises(InstallFailed) as exc:
        installer.install("opencode", "0.0.0-nope")
    assert "npm install opencode-ai@0.0.0-nope failed (exit 1)" in exc.value.detail
    assert "No matching version found" in exc.value.detail
    assert (paths.install_dirs("opencode"), os.readlink(paths.link("opencode"))) == before
    assert sorted(os.listdir(paths.bin)) == ["opencode"]  # no temporary link left
    assert run_link(tmp_path / "data", "opencode") == "opencode-ai 1.18.33"


def test_a_failed_first_install_leaves_nothing(tmp_path, npm_env):
    with pytest.raises(InstallFailed):
        make_installer(tmp_path, npm_env).install("opencode", "0.0.0-nope")
    paths = AgentPaths.of(tmp_path / "data")
    assert paths.install_dirs("opencode") == []
    assert not paths.link("opencode").is_symlink()


def test_a_package_without_the_binary_is_a_failure(tmp_path, npm_env):
    spec = replace(
        CATALOGUE.get("opencode"),
        binary="opencode-cli",
        package=AgentPackage(NPM, "opencode-ai", "1.0.0"),
    )
    catalogue = Catalogue(agents={"opencode": spec})
    with pytest.raises(InstallFailed, match="has no 'opencode-cli' command"):
        make_installer(tmp_path, npm_env, catalogue=catalogue).install("opencode")
    assert AgentPaths.of(tmp_path / "data").install_dirs("opencode") == []


def test_debris_of_an_interrupted_install_is_swept(tmp_path, npm_env):
    paths = AgentPaths.of(tmp_path / "data")
    debris = paths.npm / "opencode-deadbeef"
    (debris / "node_modules").mkdir(parents=True)
    make_installer(tmp_path, npm_env).install("opencode")
    assert not debris.exists()
    assert len(paths.install_dirs("opencode")) == 1


def test_remove(tmp_path, npm_env):
    installer = make_installer(tmp_path, npm_env)
    installer.install("opencode")
    installer.install("qwen-code")
    lines: list[str] = []
    assert installer.remove("opencode", progress=lines.append) is True
    paths = AgentPaths.of(tmp_path / "data")
    assert not paths.link("opencode").is_symlink()
    assert paths.install_dirs("opencode") == []
    assert lines == ["removed opencode 1.18.33"]
    assert run_link(tmp_path / "data", "qwen") == "@qwen-code/qwen-code 0.15.10"  # untouched
    lines.clear()
    assert installer.remove("opencode", progress=lines.append) is False
    assert "not installed by this server" in lines[0]
    with pytest.raises(AgentNotFound):
        installer.remove("nope")


def test_one_install_of_an_agent_at_a_time_across_processes(tmp_path, npm_env):
    paths = AgentPaths.of(tmp_path / "data")
    paths.locks.mkdir(parents=True)
    fd = os.open(paths.locks / "opencode.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another `sandbox agents install` would
        with pytest.raises(InstallBusy) as exc:
            make_installer(tmp_path, npm_env).install("opencode")
        assert exc.value.code == "install-running"
    finally:
        os.close(fd)
    assert make_installer(tmp_path, npm_env).install("opencode").changed


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_cancel_stops_the_install_and_removes_its_dir(tmp_path, npm_env):
    npm_env["env"]["FAKE_NPM_GATE"] = str(tmp_path / "never")
    installer = make_installer(tmp_path, npm_env)
    lines: list[str] = []
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            installer.install("opencode", progress=lines.append)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: "fetching opencode-ai@1.18.33" in lines)
    installer.cancel()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert isinstance(outcome[0], InstallFailed)
    assert "cancelled" in outcome[0].detail
    assert AgentPaths.of(tmp_path / "data").install_dirs("opencode") == []


def test_an_install_that_takes_too_long_is_given_up(tmp_path, npm_env):
    npm_env["env"]["FAKE_NPM_GATE"] = str(tmp_path / "never")
    installer = make_installer(tmp_path, npm_env, timeout=0.5)
    with pytest.raises(InstallFailed, match="gave up after"):
        installer.install("opencode")
    assert AgentPaths.of(tmp_path / "data").install_dirs("opencode") == []
