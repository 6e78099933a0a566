"""The version probe: `<binary> --version`, parsed, bounded, cached by the binary."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from openova_sandbox.agents.versions import forget_versions, parse_version, probe_version


@pytest.fixture(autouse=True)
def fresh_cache():
    forget_versions()
    yield
    forget_versions()


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("1.18.33\n", "1.18.33"),
        ("2.1.332 (Claude Code)\n", "2.1.332"),
        ("aider 0.86.2\n", "0.86.2"),
        ("GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)\n", "5.2.15"),
        ("\x1b[1mqwen\x1b[0m\n0.15.10\n", "0.15.10"),
        ("v20.11.1", "20.11.1"),
        ("1.0.0-beta.3 build x", "1.0.0-beta.3"),
        ("no version here\n", None),
        ("", None),
    ],
)
def test_parse_version(output, version):
    assert parse_version(output) == version


def test_probe_runs_the_binary_with_a_throwaway_home(tmp_path):
    home_file = tmp_path / "home-seen"
    binary = script(
        tmp_path / "agent",
        f'echo "$HOME" > {home_file}; echo "$AGENT_NO_UPDATE" >> {home_file}; echo "agent 3.2.1"',
    )
    assert probe_version(str(binary), env={"AGENT_NO_UPDATE": "1"}) == "3.2.1"
    home, flag = home_file.read_text().split()
    assert home != os.environ.get("HOME")
    assert not Path(home).exists()  # removed afterwards
    assert flag == "1"


def test_probe_is_cached_until_the_binary_changes(tmp_path):
    counter = tmp_path / "runs"
    binary = script(tmp_path / "agent", f"echo x >> {counter}; echo 1.0.0")
    assert probe_version(str(binary)) == "1.0.0"
    assert probe_version(str(binary)) == "1.0.0"
    assert counter.read_text().count("x") == 1
    script(binary, f"echo x >> {counter}; echo 1.0.1 and more")  # reinstalled
    os.utime(binary, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert probe_version(str(binary)) == "1.0.1"


def test_a_failing_missing_or_hanging_binary_has_no_version(tmp_path):
    assert probe_version(str(tmp_path / "missing")) is None
    assert probe_version(str(script(tmp_path / "fails", "echo 1.0.0; exit 3"))) is None
    child = tmp_path / "child.pid"
    hangs = script(tmp_path / "hangs", f"sleep 30 & echo $! > {child}; sleep 30")
    started = time.monotonic()
    assert probe_version(str(hangs), timeout=0.5) is None
    assert time.monotonic() - started < 5
    pid = int(child.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid):  # the whole process group went, not just the binary
        assert time.monotonic() < deadline, "the probe's child survived it"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
