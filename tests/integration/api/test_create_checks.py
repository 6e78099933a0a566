"""Create refuses what could not run, with a named 400, and stores nothing (issue 8).

Order after the spec's checks: agent-not-installed, agent-not-configured,
repo-unavailable, cross-org-repo. A real server (uvicorn, SQLite), real binaries on the
agent search path (``<data-dir>/agents/bin``, where managed installs live), the built-in
catalogue rows.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from openova_sandbox.services.byos_vault import StoredTokens, TokenVault

SESSIONS = "/api/v1/sandbox/sessions"
NO_MODEL = {"openai_base_url": "", "openai_api_key": "", "llm_gateway_url": ""}


def fake_binary(data_dir: Path, name: str) -> Path:
    """An executable named like an agent's binary in the managed agents' bin dir."""
    bin_dir = data_dir / "agents" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\nexec cat\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def fresh(make_api, tmp_path):
    """A server with the built-in catalogue only and no model variables."""
    (tmp_path / "agents.json").write_text("[]")

    def start(**overrides):
        return make_api(store="sql", **{**NO_MODEL, **overrides})

    return start


def refused(api, body, code, *, headers=None):
    answer = api.http.post(SESSIONS, headers=headers or api.auth(), json=body)
    assert answer.status_code == 400, answer.text
    payload = answer.json()
    assert payload["error"] == code, payload
    # nothing stored: not in the list, not by its name
    assert api.http.get(SESSIONS, headers=api.auth()).json() == {"sandboxes": []}
    return payload["detail"]


def test_an_uninstalled_agent_is_refused_with_its_install_command(fresh):
    api = fresh()
    detail = refused(api, {"agent": "opencode", "name": "oc"}, "agent-not-installed")
    assert "sandbox agents install opencode" in detail
    assert "'opencode' not found" in detail
    assert api.http.get(f"{SESSIONS}/oc", headers=api.auth()).status_code == 404


def test_an_agent_without_a_package_names_the_manual_way(fresh):
    api = fresh()
    detail = refused(api, {"agent": "cursor-agent"}, "agent-not-installed")
    assert "vendor installer" in detail and "cursor.com/install" in detail


def test_the_shell_is_always_there_and_runs(fresh):
    api = fresh()
    h = api.auth()
    created = api.http.post(SESSIONS, headers=h, json={"agent": "shell"})
    assert created.status_code == 201, created.text
    assert created.json()["agent"] == "shell"
    deadline = time.monotonic() + 20
    while api.http.get(f"{SESSIONS}/shell-2c234e5a", headers=h).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_missing_variables_are_named(fresh, tmp_path):
    fake_binary(tmp_path / "data", "opencode")
    api = fresh()
    detail = refused(api, {"agent": "opencode"}, "agent-not-configured")
    assert "OPENAI_BASE_URL" in detail and "OPENAI_API_KEY" in detail


def test_agents_are_configured_by_the_protocols_the_gateway_serves(fresh, tmp_path):
    """Agents reach models through the gateway with the sandbox's token: an agent is
    configured when the gateway has a provider for its protocol (a local OpenAI-shaped
    server that takes no key counts), and refused naming the variables when not."""
    fake_binary(tmp_path / "data", "opencode")
    fake_binary(tmp_path / "data", "claude")
    api = fresh(anthropic_api_key="sk-ant-test")  # an Anthropic provider only
    detail = refused(api, {"agent": "opencode"}, "agent-not-configured")
    assert "OPENAI_BASE_URL" in detail and "OPENAI_API_KEY" in detail
    created = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "claude-code"})
    assert created.status_code == 201, created.text
    api = fresh(openai_base_url="http://127.0.0.1:9/v1")  # keyless OpenAI-shaped server
    created = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "opencode"})
    assert created.status_code == 201, created.text


def test_a_configured_installed_agent_is_created(fresh, tmp_path):
    fake_binary(tmp_path / "data", "opencode")
    api = fresh(openai_base_url="http://127.0.0.1:9/v1", openai_api_key="sk-test")
    created = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "opencode"})
    assert created.status_code == 201, created.text


def test_a_rows_own_env_counts(make_api, tmp_path):
    (tmp_path / "agents.json").write_text(
        json.dumps(
            [
                {
                    "slug": "little-coder",
                    "binary": "/bin/cat",
                    "requiredEnv": ["MODEL_URL"],
                    "env": {"MODEL_URL": "http://127.0.0.1:9"},
                },
                {"slug": "aider", "binary": "/bin/cat", "requiredEnv": ["MODEL_URL|MODEL_KEY"]},
            ]
        )
    )
    api = make_api(store="sql", **NO_MODEL)
    ok = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "little-coder"})
    assert ok.status_code == 201, ok.text
    answer = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "aider"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "agent-not-configured"
    assert "MODEL_URL or MODEL_KEY" in answer.json()["detail"]


def test_claude_code_counts_a_connected_subscription(fresh, tmp_path):
    fake_binary(tmp_path / "data", "claude")
    api = fresh()
    detail = refused(api, {"agent": "claude-code"}, "agent-not-configured")
    assert "ANTHROPIC_API_KEY" in detail and "Claude subscription" in detail
    # the caller connects their subscription (its token may even need renewing)
    TokenVault(tmp_path / "data" / "byos").put(
        "user-sub-abcdef12",
        StoredTokens(access_token="sub-token", refresh_token="r", expires_at=time.time() - 5),
    )
    created = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "claude-code"})
    assert created.status_code == 201, created.text
    # someone else has not connected: refused for them
    other = api.auth(sub="other-sub-1234", email="other@acme.com")
    answer = api.http.post(SESSIONS, headers=other, json={"agent": "claude-code"})
    assert answer.json()["error"] == "agent-not-configured"


def test_a_repo_needs_a_git_server(make_api):
    api = make_api(store="sql")  # stand-in agents: runnable
    detail = refused(api, {"agent": "aider", "repo": "acme/site"}, "repo-unavailable")
    assert "SANDBOX_GIT_BASE_URL" in detail


def test_a_repo_of_another_org_is_refused(make_api):
    api = make_api(store="sql", git_base_url="http://127.0.0.1:9")
    detail = refused(api, {"agent": "aider", "repo": "other/site"}, "cross-org-repo")
    assert '"other"' in detail and '"acme"' in detail


def test_the_checks_come_in_order(fresh, tmp_path):
    api = fresh()  # nothing installed, nothing configured, no git server
    body = {"agent": "opencode", "repo": "other/site"}
    refused(api, body, "agent-not-installed")
    fake_binary(tmp_path / "data", "opencode")
    refused(api, body, "agent-not-configured")
    # the spec's own checks still come first
    refused(api, {"agent": "opencode", "repo": "Other/site"}, "invalid-repo")


def test_the_search_path_is_the_servers_path_after_the_managed_bin(fresh, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    binary = elsewhere / "qwen"
    binary.write_text("#!/bin/sh\nexec cat\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{elsewhere}{os.pathsep}{os.environ.get('PATH', '')}")
    api = fresh(openai_base_url="http://127.0.0.1:9/v1", openai_api_key="sk-test")
    created = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "qwen-code"})
    assert created.status_code == 201, created.text
