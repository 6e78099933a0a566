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
