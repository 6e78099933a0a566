"""Running the installed ``sandbox`` command as a user would, its output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SANDBOX = str(Path(sys.executable).parent / "sandbox")


def run_sandbox(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """``sandbox *args`` with the test's environment plus ``env``; text output captured."""
    return subprocess.run(
        [SANDBOX, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        **popen,
    )


def serve_until_sign_in_link(
    data_dir: Path, port: int, agents: Path, *, isolation: str = "none", timeout: float = 60
) -> subprocess.Popen[str]:
    """``sandbox serve`` on ``port`` with the override catalogue ``agents``, returned once
    it printed its sign-in link (it is up); ``isolation`` is its SANDBOX_ISOLATION."""
    import time

    env = {
        **os.environ,
        "OPENOVA_SANDBOX_AGENTS_PATH": str(agents),
        "SANDBOX_ISOLATION": isolation,
    }
    process = subprocess.Popen(
        [SANDBOX, "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        assert line, "serve exited"
        if "/login?token=" in line:
            return process
        assert time.monotonic() < deadline
