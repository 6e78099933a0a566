"""A sandbox's own HOME: seeded from the agent's row, the user's edits kept, resume
arguments only where the agent ran before."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from openova_sandbox.agents.home import (
    FILE_MODE,
    HOME_MODE,
    has_run,
    prepare_home,
    render,
    seed,
    write_new,
)
from openova_sandbox.domain.catalogue import BUILTIN, AgentSpec, HomeFile

ENV = {
    "HOME": "/home/box",
    "PWD": "/work/box",
    "OPENAI_BASE_URL": "http://model.local/v1",
    "OPENAI_API_KEY": "sk-secret-123",
    "SANDBOX_AGENT_MODEL": "coder-7b",
    "SANDBOX_OWNER": "dev@acme.com",
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def agent(**fields: object) -> AgentSpec:
    return AgentSpec(slug="tool", binary="tool", **fields)  # type: ignore[arg-type]


def test_render_fills_known_variables_and_keeps_the_rest():
    text = render('{"$$schema": "x", "m": "${SANDBOX_AGENT_MODEL}", "u": "${NOPE}", "c": "$"}', ENV)
    assert text == '{"$schema": "x", "m": "coder-7b", "u": "${NOPE}", "c": "$"}'


def test_seeding_makes_a_private_home_with_private_files(tmp_path):
    home = tmp_path / "homes" / "acme" / "box"
    files = (HomeFile(".tool/deep/config.json", '{"model": "${SANDBOX_AGENT_MODEL}"}'),)
    assert seed(home, files, ENV) == [".tool/deep/config.json"]
    config = home / ".tool" / "deep" / "config.json"
    assert json.loads(config.read_text()) == {"model": "coder-7b"}
    assert mode(config) == FILE_MODE
    for folder in (tmp_path / "homes", home.parent, home, home / ".tool", config.parent):
        assert mode(folder) == HOME_MODE, folder


def test_a_file_already_there_is_kept(tmp_path):
    home = tmp_path / "home"
    (home / ".tool").mkdir(parents=True)
    mine = home / ".tool" / "config.json"
    mine.write_text("the user's own")
    files = (HomeFile(".tool/config.json", "seeded"), HomeFile(".tool/other", "new"))
    assert seed(home, files, ENV) == [".tool/other"]
    assert mine.read_text() == "the user's own"
    assert seed(home, files, ENV) == []  # nothing to do the second time


def test_a_link_out_of_the_home_is_not_followed(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (home / ".tool").symlink_to(outside)
    assert write_new(home, ".tool/config.json", "x") is False
    assert write_new(home, ".tool/deeper/config.json", "x") is False
    assert list(outside.iterdir()) == []
    (home / "dangling").symlink_to(tmp_path / "nowhere")
    assert write_new(home, "dangling", "x") is False  # an existing link counts as there
    assert not (tmp_path / "nowhere").exists()


def test_resume_arguments_only_where_the_agent_ran_before(tmp_path):
    home = tmp_path / "home"
    tool = agent(resume_args=("--continue",))
    assert prepare_home(home, tool, ENV, resume=True) == ()  # first start: fresh
    assert has_run(home, "tool")
    assert prepare_home(home, tool, ENV, resume=False) == ()  # an extra terminal
    assert prepare_home(home, tool, ENV, resume=True) == ("--continue",)
    other = AgentSpec(slug="other", binary="other", resume_args=("-c",))
    assert prepare_home(home, other, ENV, resume=True) == ()  # per agent


def test_every_home_gets_the_owner_as_git_identity(tmp_path):
    home = tmp_path / "home"
    prepare_home(home, None, ENV, resume=False)
    assert (home / ".gitconfig").read_text() == (
        "[user]\n\tname = dev@acme.com\n\temail = dev@acme.com\n"
    )
    bare = tmp_path / "bare"
    prepare_home(bare, None, {"HOME": str(bare)}, resume=False)
    assert not (bare / ".gitconfig").exists()  # no owner: no made-up identity


@pytest.mark.parametrize("row", [a for a in BUILTIN if a.home_files], ids=lambda a: a.slug)
def test_builtin_home_files_render_to_valid_files_without_secrets(tmp_path, row):
    home = tmp_path / "home"
    prepare_home(home, row, ENV, resume=False)
    for item in row.home_files:
        text = (home / item.path).read_text()
        assert "${" not in text, item.path  # every variable named is one agents get
        assert "sk-secret-123" not in text, item.path  # keys stay in the environment
        if item.path.endswith(".json"):
            json.loads(text)


def test_builtin_rows_turn_updates_and_telemetry_off():
    rows = {a.slug: a for a in BUILTIN}
    qwen = rows["qwen-code"]
    system = next(f for f in qwen.home_files if "system-settings" in f.path)
    settings = json.loads(render(system.template, ENV))
    assert settings["general"]["enableAutoUpdate"] is False
    assert settings["privacy"]["usageStatisticsEnabled"] is False
    assert qwen.env_map["QWEN_CODE_SYSTEM_SETTINGS_PATH"] == "${HOME}/" + system.path
    assert rows["opencode"].env_map["OPENCODE_DISABLE_AUTOUPDATE"] == "1"
    assert rows["aider"].env_map["AIDER_CHECK_UPDATE"] == "false"
    assert rows["claude-code"].env_map["DISABLE_AUTOUPDATER"] == "1"
    assert rows["claude-code"].resume_args == ()  # its --continue fails without a chat
    assert {rows[s].resume_args for s in ("qwen-code", "opencode")} == {("--continue",)}


def _login_shell_path(home: Path, sandbox_path: str) -> str:
    import shutil
    import subprocess

    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run(
        [bash, "-l", "-c", 'printf %s "$PATH"'],
        env={"HOME": str(home), "PATH": sandbox_path, "SANDBOX_PATH": sandbox_path},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def test_a_login_shell_keeps_the_sandbox_path_that_etc_profile_resets(tmp_path):
    """The Shell row is ``bash -l``: /etc/profile sets PATH from scratch (Debian), and the
    managed agents' folder was gone. The seeded ~/.profile puts the sandbox's back."""
    agents_bin = tmp_path / "agents" / "bin"
    agents_bin.mkdir(parents=True)
    sandbox_path = f"{agents_bin}:/usr/local/bin:/usr/bin:/bin"
    bare = tmp_path / "bare"
    bare.mkdir()
    if str(agents_bin) in _login_shell_path(bare, sandbox_path).split(":"):
        pytest.skip("this machine's /etc/profile keeps PATH: nothing to put back")
    home = tmp_path / "home"
    prepare_home(home, None, ENV, resume=False)
    assert (home / ".profile").is_file() and mode(home / ".profile") == FILE_MODE
    assert _login_shell_path(home, sandbox_path).split(":")[0] == str(agents_bin)


def test_the_users_own_profile_is_kept(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".profile").write_text("export EDITOR=vim\n")
    prepare_home(home, None, ENV, resume=False)
    assert (home / ".profile").read_text() == "export EDITOR=vim\n"
