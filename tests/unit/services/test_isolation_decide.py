"""Which isolation a server gets (services/isolation.py): the honest fallback when the
kernel forbids user namespaces (a ``bwrap`` that fails as it does then), the refusal with
several users, the operator's explicit ``none``, and what is reported."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from openova_sandbox.config import Settings
from openova_sandbox.domain.errors import Invalid
from openova_sandbox.services.isolation import NOT_ISOLATED, decide

FORBIDDEN = "bwrap: No permissions to create new namespace, likely because the kernel does not allow non-privileged user namespaces."


@pytest.fixture
def no_userns(tmp_path, monkeypatch):
    """A ``bwrap`` first on PATH that fails as Debian's does without user namespaces."""
    folder = tmp_path / "bin"
    folder.mkdir()
    fake = folder / "bwrap"
    fake.write_text(f"#!/bin/sh\necho '{FORBIDDEN}' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", **values)  # type: ignore[arg-type]


def test_unavailable_with_one_user_serves_and_says_what_is_not_isolated(tmp_path, no_userns):
    state = decide(settings(tmp_path))
    assert state.mode == "none" and state.policy is None
    assert "No permissions to create new namespace" in state.reason
    details = state.details()
    assert details["mode"] == "none" and details["notIsolated"] == list(NOT_ISOLATED)
    assert any("data dir" in item for item in details["notIsolated"])


@pytest.mark.parametrize(
    "issuer", [{"oidc_issuer": "https://id.example"}, {"jwks_url": "https://id.example/jwks"}]
)
def test_unavailable_with_several_users_refuses_to_start(tmp_path, no_userns, issuer):
    with pytest.raises(Invalid) as refused:
        decide(settings(tmp_path, **issuer))
    assert refused.value.code == "isolation-unavailable"
    assert "SANDBOX_ISOLATION=none" in refused.value.detail
    assert "No permissions" in refused.value.detail


def test_required_and_unavailable_refuses_to_start(tmp_path, no_userns):
    with pytest.raises(Invalid, match="SANDBOX_ISOLATION=bwrap but"):
        decide(settings(tmp_path, isolation="bwrap"))


def test_the_operator_may_choose_none_even_with_several_users(tmp_path, no_userns):
    state = decide(settings(tmp_path, isolation="none", oidc_issuer="https://id.example"))
    assert state.mode == "none" and state.reason == "SANDBOX_ISOLATION=none"


def test_missing_tools_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing at all
    state = decide(settings(tmp_path), path_env="/usr/bin:/bin")
    assert state.mode == "none" and "bwrap" in state.reason and "not found" in state.reason


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_available_reports_the_policy_and_what_stays_shared(tmp_path):
    state = decide(
        settings(tmp_path, isolation_offline_orgs=("secret-org",), isolation_processes=99)
    )
    assert state.mode == "bwrap" and state.policy is not None
    assert state.policy.offline_orgs == frozenset({"secret-org"})
    assert state.policy.hidden[0] == str((tmp_path / "data").resolve())
    details = state.details()
    assert details["network"] is True
    assert any("kernel" in item for item in details["notIsolated"])
    assert details["processLimit"] in (99, None)  # None: root without a pids cgroup
    if "pids" in state.controllers or os.geteuid() != 0:
        assert details["processLimit"] == 99
    if state.cgroups is not None:
        state.cgroups.close()
