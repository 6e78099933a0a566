"""A version probe that timed out is not an answer: it is not cached as "no version"
for the binary, and is tried again after a bounded back-off (a cold first run on a busy
machine must not hide the version until the binary changes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openova_sandbox.agents import versions
from openova_sandbox.agents.versions import forget_versions, probe_version


@pytest.fixture(autouse=True)
def fresh_cache():
    forget_versions()
    yield
    forget_versions()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def slow_the_first_time(tmp_path: Path) -> tuple[Path, Path]:
    """An agent whose first ``--version`` hangs (a cold start), then answers at once."""
    runs, warm = tmp_path / "runs", tmp_path / "warm"
    binary = tmp_path / "agent"
    binary.write_text(
        "#!/bin/sh\n"
        f"echo run >> {runs}\n"
        f"if [ ! -e {warm} ]; then touch {warm}; sleep 30; fi\n"
        "echo 'agent 4.5.6'\n"
    )
    binary.chmod(0o755)
    return binary, runs


def test_a_timed_out_probe_is_retried_after_a_back_off(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(versions, "_clock", clock)
    binary, runs = slow_the_first_time(tmp_path)
    assert probe_version(str(binary), timeout=0.5) is None  # timed out
    # within the back-off it is not run again (a list of agents stays fast)
    clock.now += versions.RETRY_AFTER - 1
    assert probe_version(str(binary), timeout=10) is None
    assert runs.read_text().count("run") == 1
    # after it, the probe runs again and its answer is cached for good
    clock.now += 2
    assert probe_version(str(binary), timeout=10) == "4.5.6"
    assert runs.read_text().count("run") == 2
    clock.now += 10 * versions.RETRY_MAX
    assert probe_version(str(binary), timeout=10) == "4.5.6"
    assert runs.read_text().count("run") == 2


def test_the_back_off_doubles_while_the_probe_keeps_timing_out_and_is_bounded(
    tmp_path, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(versions, "_clock", clock)
    runs = tmp_path / "runs"
    binary = tmp_path / "agent"
    binary.write_text(f"#!/bin/sh\necho run >> {runs}\nsleep 30\n")
    binary.chmod(0o755)

    def ran() -> int:
        return runs.read_text().count("run") if runs.exists() else 0

    assert probe_version(str(binary), timeout=0.2) is None
    assert ran() == 1
    backoff = versions.RETRY_AFTER
    for count in range(2, 9):
        clock.now += backoff - 1
        assert probe_version(str(binary), timeout=0.2) is None
        assert ran() == count - 1, backoff  # still backing off
        clock.now += 2
        assert probe_version(str(binary), timeout=0.2) is None
        assert ran() == count, backoff  # tried again
        backoff = min(versions.RETRY_MAX, backoff * 2)
    assert backoff == versions.RETRY_MAX  # bounded: reached and kept


def test_a_binary_that_answered_without_a_version_is_cached(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(versions, "_clock", clock)
    runs = tmp_path / "runs"
    binary = tmp_path / "agent"
    binary.write_text(f"#!/bin/sh\necho run >> {runs}\necho 'no version here'\n")
    binary.chmod(0o755)
    assert probe_version(str(binary)) is None
    clock.now += 10 * versions.RETRY_MAX
    assert probe_version(str(binary)) is None
    assert runs.read_text().count("run") == 1  # a definite answer: not asked again
