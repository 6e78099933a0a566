"""Each agent's MCP client config in a sandbox's HOME: the ``openova-sandbox`` entry is
merged in (never the token itself, only references to the environment), the user's own
servers, settings and keys are kept, and files that are not plain JSON, links and
folders leading out of the HOME are left alone."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from openova_sandbox.agents.mcp_config import (
    CLIENTS,
    SERVER_NAME,
    NotMergeable,
    configure,
    entry_for,
    merged,
    without,
)
from openova_sandbox.domain.catalogue import BUILTIN
from openova_sandbox.services.agent_spawn import prepare_spawn
from openova_sandbox.terminal.pty import SpawnSpec

TOKEN = "eyJ-mcp-token-VALUE-123"
URL = "http://127.0.0.1:8123/mcp"
ENV = {
    "SANDBOX_MCP_URL": URL,
    "SANDBOX_MCP_TOKEN": TOKEN,
    "SANDBOX_OWNER": "dev@acme.com",
    "SANDBOX_AGENT_MODEL": "coder-7b",
    "PWD": "/work/box",
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def ours(home: Path, agent: str) -> dict:
    client = CLIENTS[agent]
    return json.loads((home / client.path).read_text())[client.key][SERVER_NAME]


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (
            "claude-code",
            {
                "type": "http",
                "url": "${SANDBOX_MCP_URL}",
                "headers": {"Authorization": "Bearer ${SANDBOX_MCP_TOKEN}"},
            },
        ),
        (
            "qwen-code",
            {
                "httpUrl": "${SANDBOX_MCP_URL}",
                "headers": {"Authorization": "Bearer ${SANDBOX_MCP_TOKEN}"},
            },
        ),
        (
            "opencode",
            {
                "type": "remote",
                "oauth": False,
                "url": "{env:SANDBOX_MCP_URL}",
                "headers": {"Authorization": "Bearer {env:SANDBOX_MCP_TOKEN}"},
            },
        ),
        (
            "cursor-agent",
            {
                "url": "${env:SANDBOX_MCP_URL}",
                "headers": {"Authorization": "Bearer ${env:SANDBOX_MCP_TOKEN}"},
            },
        ),
    ],
)
def test_each_agent_gets_its_own_syntax_for_the_url_and_the_token(agent, expected):
    assert entry_for(CLIENTS[agent]) == expected


def test_merging_keeps_every_other_server_setting_and_key_of_the_user():
    client = CLIENTS["claude-code"]
    document = {
        "theme": "dark",
        "mcpServers": {
            "github": {"type": "http", "url": "https://api.githubcopilot.com/mcp/"},
            SERVER_NAME: {
                "type": "sse",
                "url": "http://old",
                "disabled": True,
                "headers": {"X-Trace": "1", "authorization": "Bearer stale"},
            },
        },
    }
    out = merged(document, client)
    assert out["theme"] == "dark"
    assert out["mcpServers"]["github"] == document["mcpServers"]["github"]
    assert out["mcpServers"][SERVER_NAME] == {
        "type": "http",
        "url": "${SANDBOX_MCP_URL}",
        "disabled": True,  # the user's own key in our entry stays
        "headers": {"X-Trace": "1", "Authorization": "Bearer ${SANDBOX_MCP_TOKEN}"},
    }
    assert document["mcpServers"][SERVER_NAME]["url"] == "http://old"  # input untouched


def test_a_document_that_is_not_an_object_is_not_merged():
    client = CLIENTS["qwen-code"]
    with pytest.raises(NotMergeable, match="not a JSON object"):
        merged([1, 2], client)
    with pytest.raises(NotMergeable, match='"mcpServers" is not a JSON object'):
        merged({"mcpServers": ["x"]}, client)
    assert merged(None, client) == {"mcpServers": {SERVER_NAME: entry_for(client)}}


def test_without_removes_only_ours():
    client = CLIENTS["opencode"]
    document = {"mcp": {"mine": {"type": "local"}, SERVER_NAME: {"type": "remote"}}, "x": 1}
    assert without(document, client) == {"mcp": {"mine": {"type": "local"}}, "x": 1}
    assert without({"x": 1}, client) == {"x": 1}
    assert without("text", client) == "text"


def test_a_new_file_is_private_and_holds_no_token(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    outcome = configure(home, "cursor-agent", ENV)
    assert (outcome.state, outcome.path) == ("written", ".cursor/mcp.json")
    config = home / ".cursor" / "mcp.json"
    assert mode(config) == 0o600 and mode(config.parent) == 0o700
    assert ours(home, "cursor-agent")["url"] == "${env:SANDBOX_MCP_URL}"
    assert TOKEN not in config.read_text() and URL not in config.read_text()
    assert [p.name for p in config.parent.iterdir()] == ["mcp.json"]  # no temp file left


def test_a_second_spawn_changes_nothing_and_the_users_edits_stay(tmp_path):
    home = tmp_path / "home"
    (home / ".qwen").mkdir(parents=True)
    settings = home / ".qwen" / "settings.json"
    settings.write_text(
        json.dumps({"model": {"name": "mine"}, "mcpServers": {"db": {"command": "x"}}})
    )
    settings.chmod(0o640)
    assert configure(home, "qwen-code", ENV).state == "written"
    assert mode(settings) == 0o640  # the file's mode is kept
    data = json.loads(settings.read_text())
    assert data["model"] == {"name": "mine"}
    assert data["mcpServers"]["db"] == {"command": "x"}
    # the user turns our entry's trust on: kept at the next spawn, nothing rewritten
    data["mcpServers"][SERVER_NAME]["trust"] = True
    settings.write_text(json.dumps(data))
    before = settings.stat().st_mtime_ns, settings.stat().st_ino
    assert configure(home, "qwen-code", ENV).state == "unchanged"
    assert (settings.stat().st_mtime_ns, settings.stat().st_ino) == before


def test_without_an_mcp_server_the_entry_is_removed(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert configure(home, "opencode", ENV).state == "written"
    config = home / ".config" / "opencode" / "opencode.json"
    mine = json.loads(config.read_text())
    mine["mcp"]["mine"] = {"type": "local", "command": ["x"]}
    config.write_text(json.dumps(mine))
    no_mcp = {k: v for k, v in ENV.items() if not k.startswith("SANDBOX_MCP")}
    assert configure(home, "opencode", no_mcp).state == "written"
    assert json.loads(config.read_text())["mcp"] == {"mine": {"type": "local", "command": ["x"]}}
    assert configure(home, "opencode", no_mcp).state == "unchanged"
    # and with no file at all, none is made
    assert configure(home, "claude-code", no_mcp).state == "unchanged"
    assert not (home / ".claude.json").exists()


@pytest.mark.parametrize("content", ['{"a": 1, // mine\n}', "[1]", '{"mcpServers": 3}'])
def test_a_file_that_cannot_be_merged_is_left_as_it_is(tmp_path, content):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".claude.json").write_text(content)
    outcome = configure(home, "claude-code", ENV)
    assert outcome.state == "skipped" and "left as it is" in outcome.reason
    assert (home / ".claude.json").read_text() == content


def test_links_and_folders_leading_out_of_the_home_are_not_written_through(tmp_path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    (elsewhere / "claude.json").write_text("{}")
    (home / ".claude.json").symlink_to(elsewhere / "claude.json")
    (home / ".cursor").symlink_to(elsewhere, target_is_directory=True)
    assert configure(home, "claude-code", ENV).state == "skipped"
    assert configure(home, "cursor-agent", ENV).state == "skipped"
    assert (elsewhere / "claude.json").read_text() == "{}"
    assert sorted(os.listdir(elsewhere)) == ["claude.json"]


def test_an_agent_without_an_mcp_client_is_not_touched(tmp_path):
    assert configure(tmp_path, "aider", ENV).state == "none"
    assert configure(tmp_path, "shell", ENV).state == "none"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("slug", ["claude-code", "qwen-code", "opencode"])
def test_the_spawn_hook_merges_into_the_rows_seeded_files(tmp_path, slug):
    """Through the spawn hook with the built-in rows: the seeded config keeps what the
    row put there (provider, no-update settings) and gains the entry; the token is in
    the environment only."""
    agent = next(a for a in BUILTIN if a.slug == slug)
    home = tmp_path / "home"
    spec = SpawnSpec(argv=("/bin/true",), cwd=str(tmp_path), env={**ENV, "HOME": str(home)})
    prepare_spawn(spec, agent=agent, home=str(home), resume=False)
    client = CLIENTS[slug]
    data = json.loads((home / client.path).read_text())
    assert data[client.key][SERVER_NAME] == entry_for(client)
    seeded = {
        "claude-code": "hasCompletedOnboarding",
        "qwen-code": "security",
        "opencode": "provider",
    }
    assert seeded[slug] in data
    for path in home.rglob("*"):
        if path.is_file():
            assert TOKEN not in path.read_text(errors="replace"), path


def test_spawns_configuring_at_once_never_fail_or_leave_half_a_file(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    home = tmp_path / "home"
    home.mkdir()
    (home / ".claude.json").write_text(json.dumps({"theme": "dark", "projects": {"x": {}}}))

    def spawn(i: int) -> str:
        env = ENV if i % 2 else {k: v for k, v in ENV.items() if not k.startswith("SANDBOX_MCP")}
        return configure(home, "claude-code", env).state

    with ThreadPoolExecutor(8) as pool:
        states = list(pool.map(spawn, range(64)))
    assert set(states) <= {"written", "unchanged"}
    data = json.loads((home / ".claude.json").read_text())
    assert data["theme"] == "dark" and data["projects"] == {"x": {}}
    assert sorted(p.name for p in home.iterdir()) == [".claude.json"]  # no temp file left
