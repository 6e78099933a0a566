"""The agent catalogue: built-ins, the override file, installed detection, required env."""

from __future__ import annotations

import json
import os
import stat

import pytest

from openova_sandbox.domain.catalogue import (
    NPM,
    PIP,
    RESCUE_SHELL,
    SHELL,
    SOURCE_BUILTIN,
    SOURCE_OVERRIDE,
    CatalogueError,
    load_catalogue,
)


def test_builtins():
    cat = load_catalogue(None)
    assert cat.api_slugs == [
        "aider",
        "claude-code",
        "cursor-agent",
        "little-coder",
        "opencode",
        "qwen-code",
        "shell",
    ]
    assert cat.get(SHELL).offered_by_api
    assert cat.get(SHELL).required_env == ()
    shell = cat.get(RESCUE_SHELL)
    assert shell is not None
    assert shell.binary == "/bin/sh"
    assert shell.default_args == ("-l",)
    assert not shell.offered_by_api
    assert cat.get("aider").default_args == ("--yes-always", "--no-auto-commits")
    assert cat.get("qwen-code").binary == "qwen"


def test_override_file_replaces_and_skips_bad_rows(tmp_path):
    path = tmp_path / "agents.json"
    path.write_text(
        json.dumps(
            [
                {
                    "slug": "aider",
                    "binary": "/opt/aider",
                    "defaultArgs": ["--x"],
                    "defaultCwd": "/w",
                    "requiredEnv": ["A|B", "C"],
                    "notes": "custom",
                },
                {"slug": "", "binary": "x"},
                {"slug": "y", "binary": ""},
                "nonsense",
                {"slug": "extra-agent", "binary": "extra"},
            ]
        )
    )
    cat = load_catalogue(path)
    aider = cat.get("aider")
    assert aider.binary == "/opt/aider"
    assert aider.default_args == ("--x",)
    assert aider.default_cwd == "/w"
    assert aider.required_env == (("A", "B"), ("C",))
    assert aider.label == "Aider"  # kept from the built-in row
    assert cat.get("y") is None
    assert "extra-agent" in cat.api_slugs


def test_missing_file_means_builtins(tmp_path):
    assert load_catalogue(tmp_path / "absent.json").api_slugs == load_catalogue(None).api_slugs


@pytest.mark.parametrize(
    ("text", "says"), [("{not json", "not valid JSON"), ('{"slug": "x"}', "JSON array")]
)
def test_an_unusable_override_file_is_an_error_naming_it(tmp_path, text, says):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(bad)
    assert str(bad) in caught.value.detail
    assert says in caught.value.detail
    assert caught.value.code == "invalid-catalogue"


def test_override_rows_carry_env_home_files_and_resume_args(tmp_path):
    path = tmp_path / "agents.json"
    path.write_text(
        json.dumps(
            [
                {
                    "slug": "mine",
                    "binary": "mine",
                    "env": {"MINE_MODEL": "m1", "": "dropped"},
                    "homeFiles": [
                        {"path": ".mine/config.json", "content": '{"url": "${OPENAI_BASE_URL}"}'},
                        {"path": "/etc/passwd", "content": "absolute paths are refused"},
                        {"path": "../escape", "content": "so are parent folders"},
                    ],
                    "resumeArgs": ["--continue"],
                }
            ]
        )
    )
    mine = load_catalogue(path).get("mine")
    assert mine.env_map == {"MINE_MODEL": "m1"}
    assert [f.path for f in mine.home_files] == [".mine/config.json"]
    assert mine.resume_args == ("--continue",)
    assert mine.source == SOURCE_OVERRIDE
    assert load_catalogue(None).get("aider").source == SOURCE_BUILTIN
    assert "m1" not in repr(mine)  # values are never shown by repr (and so never logged)


def test_builtin_packages_are_pinned():
    cat = load_catalogue(None)
    assert cat.get("opencode").package.spec() == "opencode-ai@1.18.33"
    assert cat.get("opencode").package.spec("1.2.3") == "opencode-ai@1.2.3"
    assert cat.get("aider").package.manager == PIP
    assert cat.get("aider").package.spec() == "aider-chat==0.86.2"
    assert cat.get("qwen-code").package.manager == NPM
    assert cat.get("cursor-agent").package is None
    assert "vendor installer" in cat.get("cursor-agent").manual_install


def test_installed_detection_and_required_env(tmp_path):
    tool = tmp_path / "aider"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    aider = load_catalogue(None).get("aider")
    assert aider.resolve_binary(str(tmp_path)) == str(tool)
    assert aider.resolve_binary("/nonexistent") is None
    assert aider.missing_env({}) == ["OPENAI_BASE_URL", "OPENAI_API_KEY"]
    assert aider.missing_env({"OPENAI_BASE_URL": "u", "OPENAI_API_KEY": "k"}) == []
    claude = load_catalogue(None).get("claude-code")
    assert claude.missing_env({"ANTHROPIC_API_KEY": "k"}) == []
    # a connected Claude subscription (BYOS) is enough too
    assert claude.missing_env({"CLAUDE_CODE_OAUTH_TOKEN": "t", "ANTHROPIC_API_KEY": ""}) == []
    assert claude.missing_env({}) == [
        "LLM_GATEWAY_URL or ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN"
    ]
    assert os.access("/bin/sh", os.X_OK)
    assert load_catalogue(None).get(RESCUE_SHELL).resolve_binary(None) == "/bin/sh"
