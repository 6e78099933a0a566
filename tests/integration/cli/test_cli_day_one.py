"""The CLI as a newcomer meets it (issue 8): what `sandbox serve` prints last, an unusable
override file, `--server` anywhere, whole IDs, `rm` of a missing ID, advice that fits,
flags shown as flags, and `sandbox login-link` — real processes throughout."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openova_sandbox.testing.server import free_port
from support.cli import SANDBOX
from support.cli import run_sandbox as run
from support.fake_agents import write_stand_ins

LINK = re.compile(r"(http://\S+/login\?token=\S+)")


class Serving:
    """`sandbox serve` with stdout and stderr on one pipe, as a terminal shows them."""

    def __init__(self, tmp_path: Path, port: int | None = None, **env: str) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        agents = write_stand_ins(tmp_path / "agents.json")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tmp_path / "data"
        self.process = subprocess.Popen(
            [SANDBOX, "serve", "--port", str(self.port), "--data-dir", str(self.data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "SANDBOX_LOG_JSON": "true",
                "OPENOVA_SANDBOX_AGENTS_PATH": str(agents),
                **env,
            },
        )
        self.lines: list[str] = []
        self._pending = b""
        self.link = ""
        deadline = time.monotonic() + 60
        while not self.link:
            assert time.monotonic() < deadline, "no sign-in link:\n" + "".join(self.lines)
            line = self.readline(deadline - time.monotonic())
            assert line is not None, "serve exited:\n" + "".join(self.lines)
            match = LINK.search(line)
            if match:
                self.link = match.group(1)

    def readline(self, timeout: float) -> str | None:
        """The next line, or None at its end; "" when nothing came within ``timeout``.

        Reads the pipe's descriptor itself: a buffered ``readline`` after ``select``
        would leave lines that arrived in the same chunk in Python's buffer, where
        ``select`` cannot see them (the link then "never comes")."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + max(0.0, timeout)
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return ""
            chunk = os.read(fd, 65536)
            if not chunk:
                if not self._pending:
                    return None
                self._pending += b"\n"
                break
            self._pending += chunk
        raw, _, self._pending = self._pending.partition(b"\n")
        line = raw.decode(errors="replace") + "\n"
        self.lines.append(line)
        return line

    def args(self) -> list[str]:
        return ["--server", self.url, "--data-dir", str(self.data)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Serving]:
    server = Serving(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def test_the_login_link_is_the_last_thing_serve_prints(serving):
    before = "".join(serving.lines)
    assert "alembic" not in before and "setup plugin" not in before
    assert "sandbox cache listed" in before  # start-up logging came first
    # it stands out: a heading on the line before, a blank line after
    at = next(i for i, line in enumerate(serving.lines) if "/login?token=" in line)
    assert "Sign in" in serving.lines[at - 1]
    assert serving.readline(5) == "\n"
    # and nothing follows while nobody uses the server (a negative check: a short wait)
    assert serving.readline(1.5) == ""


def test_an_override_file_that_is_not_json_stops_every_server(tmp_path):
    broken = tmp_path / "agents.json"
    broken.write_text('[{"slug": "aider", "binary": "/bin/sh"},]')
    env = {"OPENOVA_SANDBOX_AGENTS_PATH": str(broken), "SANDBOX_STORE": "memory"}
    port = str(free_port())
    commands = {
        "serve": ["serve", "--port", port, "--data-dir", str(tmp_path / "data")],
        "api": ["api", "--port", port],
        "pty-server": ["pty-server", "--port", port],
    }
    extra = {
        "api": {"SANDBOX_DATA_DIR": str(tmp_path / "api")},
        "pty-server": {"SANDBOX_ID": "x", "SANDBOX_JWKS_URL": "http://127.0.0.1:9/jwks"},
    }
    for name, args in commands.items():
        out = run(*args, env={**env, **extra.get(name, {})}, timeout=60)
        assert out.returncode == 1, (name, out.stdout, out.stderr)
        assert str(broken) in out.stderr and "not valid JSON" in out.stderr, (name, out.stderr)
        assert "Traceback" not in out.stderr, (name, out.stderr)
        assert "/login?token=" not in out.stdout


def test_server_before_or_after_the_command(serving, tmp_path):
    data = ["--data-dir", str(serving.data)]
    before = run("--server", serving.url, "ls", *data)
    assert before.returncode == 0, before.stderr
    assert "No sandboxes yet" in before.stdout
    # the command's own --server wins over the one before it, which wins over the env
    dead = f"http://127.0.0.1:{free_port()}"
    both = run("--server", dead, "ls", "--server", serving.url, *data)
    assert both.returncode == 0, both.stderr
    env_only = run("--server", serving.url, "ls", *data, env={"SANDBOX_SERVER": dead})
    assert env_only.returncode == 0, env_only.stderr
    from_env = run("ls", *data, env={"SANDBOX_SERVER": serving.url})
    assert from_env.returncode == 0, from_env.stderr


def test_ls_never_cuts_an_id(serving):
    name = "a-rather-long-sandbox-name-that-is-what-get-and-attach-need-x"
    created = run("create", "--agent", "aider", "--name", name, *serving.args())
    assert created.returncode == 0, created.stderr
    for columns in ("40", "200"):
        listed = run("ls", *serving.args(), env={"COLUMNS": columns})
        assert listed.returncode == 0
        ids = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
        assert ids == [name], listed.stdout
        assert "…" not in listed.stdout


def test_rm_of_a_missing_id_says_so(serving):
    missing = run("rm", "no-such-box", *serving.args())
    assert missing.returncode == 1
    assert 'no sandbox "no-such-box"' in missing.stderr
    assert "deleted" not in missing.stdout
    assert run("create", "--agent", "aider", "--name", "real", *serving.args()).returncode == 0
    gone = run("rm", "real", *serving.args())
    assert gone.returncode == 0 and "deleted real" in gone.stdout


def test_advice_fits_the_situation(serving, tmp_path):
    elsewhere = tmp_path / "not-its-data-dir"
    running = run("ls", "--server", serving.url, "--data-dir", str(elsewhere))
    assert running.returncode == 1
    assert "is running" in running.stderr and "--data-dir" in running.stderr
    assert "sandbox serve" not in running.stderr  # a server is running: no "start one"
    dead = f"http://127.0.0.1:{free_port()}"
    stopped = run("ls", "--server", dead, "--data-dir", str(elsewhere))
    assert stopped.returncode == 1
    assert "no server answers" in stopped.stderr and "sandbox serve" in stopped.stderr
    # a token from another data dir: said as such
    other = Serving(tmp_path / "other")
    try:
        mixed = run("ls", "--server", serving.url, "--data-dir", str(other.data))
        assert mixed.returncode == 1
        assert "did not accept" in mixed.stderr and "data dir" in mixed.stderr
    finally:
        other.stop()


@pytest.mark.parametrize("command", [["ls"], ["get"], ["create"], ["agents", "list"], []])
def test_flags_are_shown_as_flags(command):
    shown = run(*command, "--help", env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert shown.returncode == 0
    assert "<bool>" not in shown.stdout and "--no-" not in shown.stdout, shown.stdout
    assert "--help" in shown.stdout


def test_login_link_prints_a_link_and_a_qr_code_that_work_once_across_a_restart(serving, tmp_path):
    assert run("create", "--agent", "aider", "--name", "box", *serving.args()).returncode == 0
    missing = run("login-link", "--session", "nope", *serving.args())
    assert missing.returncode == 1 and "not found" in missing.stderr

    made = run("login-link", "--session", "box", *serving.args())
    assert made.returncode == 0, made.stderr
    link = LINK.search(made.stdout)
    assert link is not None, made.stdout
    assert "single use" in made.stdout
    qr = [line for line in made.stdout.splitlines() if "█" in line]
    assert len(qr) > 20  # the QR code, in half blocks
    assert "another device cannot reach" in made.stderr  # 127.0.0.1: said so

    def open_link() -> httpx.Response:
        with httpx.Client() as browser:
            return browser.get(link.group(1))

    first = open_link()
    assert (first.status_code, first.headers["location"]) == (303, "/sandbox/box")
    assert open_link().status_code == 401
    # the same server, restarted on the same port and data dir: still used
    serving.stop()
    again = Serving(tmp_path, port=serving.port)
    try:
        assert open_link().status_code == 401
        fresh = run("login-link", *again.args())
        assert fresh.returncode == 0
        new_link = LINK.search(fresh.stdout)
        assert new_link is not None
        with httpx.Client() as browser:
            landed = browser.get(new_link.group(1))
        assert (landed.status_code, landed.headers["location"]) == (303, "/sandbox")
        assert json.loads(run("ls", "--json", *again.args()).stdout)["sandboxes"]
    finally:
        again.stop()
