"""Starting a real `sandbox serve` for the browser tests, and finding chromium.

The server is started exactly as a user would (`sandbox serve --host 127.0.0.1 --port
<free> --data-dir <tmp>`); its agent catalogue is overridden so `aider` is a plain
interactive shell, which makes the terminal deterministic without any real agent
installed. The browser is driven with Playwright's own API (no pytest plugin, no browser
download): `/usr/bin/chromium` is launched directly.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_ALL = "SANDBOX_TEST_REQUIRE_ALL"
ROOT = Path(__file__).resolve().parents[2]
DIST_INDEX = ROOT / "src" / "openova_sandbox" / "web" / "dist" / "index.html"
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOGIN_LINE = re.compile(r"(\S*/login\?token=\S+)")
SERVE_START_SECONDS = 60.0

# `aider` becomes an interactive POSIX shell with a fixed prompt: no real agent needed.
FAKE_AGENTS = [
    {
        "slug": "aider",
        "binary": "/bin/sh",
        "defaultArgs": ["-i"],
        "requiredEnv": [],
        "notes": "end-to-end stand-in: an interactive shell",
    }
]


def skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ALL}=1: browser tests are mandatory)")
    print(f"\nskipping browser end-to-end tests: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_console_built() -> None:
    """Build the console when the assets are missing (a fresh clone running pytest alone).
    Under a file lock: both pytest-xdist workers may get here at once, and two `npm ci`
    in one folder break each other."""
    if DIST_INDEX.is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        skip_or_fail("the console is not built and npm is not installed")
        return
    web = ROOT / "web"
    guard = os.open(web, os.O_RDONLY)  # the lock is on the folder itself: no lock file
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if DIST_INDEX.is_file():  # the other worker built it meanwhile
            return
        for args in ([npm, "ci", "--no-audit", "--no-fund"], [npm, "run", "build"]):
            subprocess.run(args, cwd=web, check=True, timeout=600, capture_output=True)
    finally:
        os.close(guard)  # releases the lock


@dataclass
class ServeProcess:
    """One running `sandbox serve`, with its output kept for failure messages."""

    base_url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    login_url: str = ""

    def output(self) -> str:
        return "".join(self.lines[-80:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_serve(tmp: Path, *, extra_env: dict[str, str] | None = None) -> ServeProcess:
    sandbox_bin = Path(sys.executable).with_name("sandbox")
    if not sandbox_bin.exists():
        pytest.fail(f"{sandbox_bin} missing: install the project (`make setup`)")
    agents = tmp / "agents.json"
    agents.write_text(json.dumps(FAKE_AGENTS))
    data_dir = tmp / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_DATABASE")}
    env.update(
        {
            "OPENOVA_SANDBOX_AGENTS_PATH": str(agents),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
            "COLUMNS": "400",
            **(extra_env or {}),
        }
    )
    process = subprocess.Popen(
        [
            str(sandbox_bin),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp,
    )
    serve = ServeProcess(base_url=f"http://127.0.0.1:{port}", process=process)
    found = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            serve.lines.append(line)
            match = LOGIN_LINE.search(line)
            if match and not serve.login_url:
                link = match.group(1)
                serve.login_url = link if "://" in link else serve.base_url + link
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + SERVE_START_SECONDS
    while time.monotonic() < deadline and process.poll() is None and not found.is_set():
        found.wait(0.2)
    if not found.is_set():
        serve.stop()
        pytest.fail(f"`sandbox serve` printed no login link; output:\n{serve.output()}")
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(serve.base_url + "/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return serve
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    serve.stop()
    pytest.fail(f"`sandbox serve` did not become healthy; output:\n{serve.output()}")
    raise AssertionError("unreachable")
