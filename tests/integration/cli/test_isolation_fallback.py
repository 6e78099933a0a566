"""`sandbox serve` where the kernel forbids user namespaces (a `bwrap` failing as it does
then): with one user it serves and says what is not isolated; with an external issuer
(several users) it refuses to start unless SANDBOX_ISOLATION=none (issue 12)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

from openova_sandbox.testing.server import free_port
from support.cli import SANDBOX

FORBIDDEN = "bwrap: No permissions to create new namespace"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    fake = folder / "bwrap"
    fake.write_text(f"#!/bin/sh\necho '{FORBIDDEN}' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", **extra}


def _serve(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SANDBOX, "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_several_users_without_isolation_is_refused(tmp_path):
    env = _env(tmp_path, SANDBOX_OIDC_ISSUER="https://id.example", SANDBOX_JWKS_URL="")
    process = _serve(tmp_path, env)
    out, _ = process.communicate(timeout=60)
    assert process.returncode != 0, out
    assert "cannot isolate sandboxes from each other" in out
    assert FORBIDDEN in out and "SANDBOX_ISOLATION=none" in out


def test_one_user_is_served_and_told(tmp_path):
    process = _serve(tmp_path, _env(tmp_path))
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while not any("/login?token=" in line for line in lines):
            line = process.stdout.readline()
            assert line, "serve exited:\n" + "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline
    finally:
        process.terminate()
        process.wait(timeout=30)
    said = "".join(lines)
    assert "Isolation: NONE" in said and FORBIDDEN in said
    assert "isolation_off" in said  # the log line naming what is not isolated
    assert "the data dir (issuer signing key" in said
