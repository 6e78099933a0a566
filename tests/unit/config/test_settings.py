"""Settings: env names from the specs, defaults, and errors that name the variable."""

from __future__ import annotations

import pytest

from openova_sandbox.config import RING_DEFAULT, RING_MAX, load_settings
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
