"""Settings: env names from the specs, defaults, and errors that name the variable."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from openova_sandbox.config import RING_DEFAULT, RING_MAX, Settings, load_settings
from openova_sandbox.controller.kube.operator import render_config
from openova_sandbox.domain.errors import Invalid


def test_defaults(monkeypatch):
    for name in ("SANDBOX_DEFAULT_QUOTA_CPU", "SANDBOX_RING_BUFFER_BYTES"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.quota_dict == {"cpu": "4", "memory": "8Gi", "storage": "50Gi", "concurrentSessions": 3}
    assert s.ring_buffer_bytes == RING_DEFAULT
    assert s.byos_enabled


def test_spec_env_names(monkeypatch):
    monkeypatch.setenv("CATALYST_SANDBOX_DEFAULT_NAMESPACE", "tenants")
    monkeypatch.setenv("OPENOVA_SANDBOX_AGENTS_PATH", "/tmp/agents.json")
    monkeypatch.setenv("SANDBOX_BYOS_CLAUDE_CODE_SCOPES", "a, b")
    monkeypatch.setenv("SANDBOX_BYOS_CLAUDE_CODE_ENABLED", "no")
    monkeypatch.setenv("SANDBOX_ID", "box")
    monkeypatch.setenv("SANDBOX_KUBE_IMAGE", "registry.local/sandbox:1")
    s = load_settings()
    assert s.default_namespace == "tenants"
    assert s.agents_path == "/tmp/agents.json"
    assert s.byos_claude_code_scopes == ("a", "b")
    assert not s.byos_enabled
    assert s.pty_sandbox_id == "box"
    assert render_config(s).image == "registry.local/sandbox:1"


@pytest.mark.parametrize(
    ("raw", "enabled"),
    [("", True), ("true", True), ("1", True), ("TRUE", False), ("yes", False), ("0", False)],
)
def test_byos_is_enabled_only_by_empty_true_or_1(monkeypatch, raw, enabled):
    monkeypatch.setenv("SANDBOX_BYOS_CLAUDE_CODE_ENABLED", raw)
    assert load_settings().byos_enabled is enabled


def test_offered_agents_are_a_comma_list(monkeypatch):
    monkeypatch.setenv("SANDBOX_AGENTS", " aider, claude-code ,")
    assert load_settings().agents == ("aider", "claude-code")
    monkeypatch.delenv("SANDBOX_AGENTS")
    assert load_settings().agents == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2048", 2048),
        ("0", RING_DEFAULT),
        ("-5", RING_DEFAULT),
        ("x", RING_DEFAULT),
        (str(64 * 1024 * 1024), RING_MAX),
    ],
)
def test_ring_buffer_clamp(monkeypatch, raw, expected):
    monkeypatch.setenv("SANDBOX_RING_BUFFER_BYTES", raw)
    assert load_settings().ring_buffer_bytes == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SANDBOX_DEFAULT_QUOTA_CPU", "four"),
        ("SANDBOX_DEFAULT_QUOTA_MEMORY", "8GB"),
        ("SANDBOX_DEFAULT_QUOTA_STORAGE", "-1Gi"),
        ("SANDBOX_DEFAULT_QUOTA_SESSIONS", "11"),
        ("SANDBOX_STORE", "etcd"),
        ("SANDBOX_SESSION_LIMIT", "0"),
        ("SANDBOX_KUBE_REPO_STORAGE", "big"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(Invalid) as caught:
        load_settings()
    assert caught.value.code == "invalid-settings"
    assert name in caught.value.detail


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        # aliases first, in order, then SANDBOX_<FIELD>; names match in any case
        ({"SANDBOX_ID": "a", "SANDBOX_PTY_SANDBOX_ID": "b"}, "pty_sandbox_id", "a"),
        ({"SANDBOX_PTY_SANDBOX_ID": "b"}, "pty_sandbox_id", "b"),
        ({"sandbox_id": "lower"}, "pty_sandbox_id", "lower"),
        ({"OPENAI_API_KEY": "k", "SANDBOX_OPENAI_API_KEY": "j"}, "openai_api_key", "k"),
        ({"SANDBOX_DEFAULT_NAMESPACE": "x"}, "default_namespace", "x"),
        # integers as the pydantic-settings class read them
        ({"SANDBOX_DEFAULT_QUOTA_SESSIONS": " 4 "}, "default_quota_sessions", 4),
        ({"SANDBOX_DEFAULT_QUOTA_SESSIONS": "+4"}, "default_quota_sessions", 4),
        ({"SANDBOX_DEFAULT_QUOTA_SESSIONS": "4.0"}, "default_quota_sessions", 4),
        ({"SANDBOX_DEFAULT_QUOTA_SESSIONS": "1_0"}, "default_quota_sessions", 10),
        ({"SANDBOX_LOG_JSON": "Yes"}, "log_json", True),
        ({"SANDBOX_LOG_JSON": "off"}, "log_json", False),
        ({"SANDBOX_KUBE_MCP_NEEDS_TOKEN": "1"}, "kube_mcp_needs_token", True),
        ({"SANDBOX_IMAGE_AGENTS": " a  b,c"}, "image_agents", ("a", "b", "c")),
        ({"SANDBOX_BUDGET_ORG_USD": " 7.5 "}, "budget_org_usd", Decimal("7.5")),
        ({"SANDBOX_BUDGET_ORG_USD": ""}, "budget_org_usd", None),
        ({"SANDBOX_DATA_DIR": "/srv/x"}, "data_dir", Path("/srv/x")),
        ({"SANDBOX_STORE": "memory"}, "store", "memory"),
        ({"SANDBOX_PTY_EVENT_LOOP": "asyncio"}, "pty_event_loop", "asyncio"),
    ],
)
def test_environment_is_read_as_before(monkeypatch, env, field, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert getattr(load_settings(), field) == expected


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SANDBOX_DEFAULT_QUOTA_SESSIONS", "4.5", "valid integer"),
        ("SANDBOX_DEFAULT_QUOTA_SESSIONS", "0x3", "valid integer"),
        ("SANDBOX_DEFAULT_QUOTA_SESSIONS", "", "valid integer"),
        ("SANDBOX_VIEWER_WINDOW_BYTES", "1", "greater than or equal to 65536"),
        ("SANDBOX_SCREEN_SCROLLBACK_LINES", "100001", "less than or equal to 100000"),
        ("SANDBOX_LOG_JSON", "", "valid boolean"),
        ("SANDBOX_LOG_LEVEL", "INFO", "'debug', 'info', 'warning' or 'error'"),
        ("SANDBOX_BUDGET_ORG_USD", "x", "not an amount in USD"),
        ("SANDBOX_DEFAULT_QUOTA_CPU", " 4", "not a CPU quantity"),
    ],
)
def test_bad_values_are_refused_with_the_variable_and_the_reason(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(Invalid) as caught:
        load_settings()
    assert f"{name}: " in caught.value.detail
    assert message in caught.value.detail


def test_an_aliased_variable_is_named_once_not_prefixed_twice(monkeypatch):
    monkeypatch.setenv("SANDBOX_SESSION_LIMIT", "0")
    with pytest.raises(Invalid) as caught:
        load_settings()
    assert caught.value.detail.startswith("invalid settings: SANDBOX_SESSION_LIMIT: ")


def test_every_problem_is_reported_in_field_order(monkeypatch):
    monkeypatch.setenv("SANDBOX_DEFAULT_QUOTA_SESSIONS", "x")
    monkeypatch.setenv("SANDBOX_STORE", "etcd")
    with pytest.raises(Invalid) as caught:
        load_settings()
    detail = caught.value.detail
    assert detail.index("SANDBOX_STORE") < detail.index("SANDBOX_DEFAULT_QUOTA_SESSIONS")


def test_overrides_win_over_the_environment_by_name_or_alias(monkeypatch):
    monkeypatch.setenv("SANDBOX_ID", "env")
    monkeypatch.setenv("SANDBOX_AGENTS", "e1")
    assert load_settings(pty_sandbox_id="kw").pty_sandbox_id == "kw"
    assert load_settings(SANDBOX_ID="alias").pty_sandbox_id == "alias"
    assert load_settings(agents=["z"]).agents == ("z",)
    assert load_settings(pty_sandbox_id=None).pty_sandbox_id == "env"  # None: no override
    assert load_settings(nonsense=1).pty_sandbox_id == "env"  # unknown: ignored


def test_settings_are_frozen_checked_and_keep_secrets_out_of_repr():
    settings = Settings(openai_api_key="sk-SECRET", cookie_secret="c-SECRET", store="memory")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.store = "sql"  # type: ignore[misc]
    assert "SECRET" not in repr(settings)
    assert hash(settings) == hash(dataclasses.replace(settings))
    with pytest.raises(Invalid, match="SANDBOX_DEFAULT_QUOTA_SESSIONS"):
        Settings(default_quota_sessions=11)
    assert Settings(default_quota_sessions="4").default_quota_sessions == 4  # type: ignore[arg-type]
    assert dataclasses.replace(settings, store="kube").store == "kube"
