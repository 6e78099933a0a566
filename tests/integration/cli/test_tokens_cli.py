"""`sandbox tokens create|list|revoke` as a user runs them: subprocesses against a real
`sandbox serve` process (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openova_sandbox.testing.server import free_port
from support.cli import SANDBOX
from support.cli import run_sandbox as run
from support.fake_agents import write_stand_ins


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    agents = write_stand_ins(tmp_path / "agents.json")
    url = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [SANDBOX, "serve", "--port", url.rsplit(":", 1)[1], "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SANDBOX_LOG_JSON": "true", "OPENOVA_SANDBOX_AGENTS_PATH": str(agents)},
    )
    deadline = time.monotonic() + 60  # a loaded machine starts it slowly
    assert process.stdout is not None
    while "/login?token=" not in (line := process.stdout.readline()):
        assert line, "serve exited: " + (process.stderr.read() if process.stderr else "")
        assert time.monotonic() < deadline
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_create_use_list_and_revoke_a_token(server: str, tmp_path: Path) -> None:
    where = ["--server", server, "--data-dir", str(tmp_path / "data")]
    made = run("tokens", "create", "nightly build", "--expires-in-days", "3", *where)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("osb_pat_") and "\n" not in token  # the token alone on stdout
    assert "shown once" in made.stderr
    # the token works as SANDBOX_TOKEN for every client command
    listed = run("ls", "--json", "--server", server, env={"SANDBOX_TOKEN": token})
    assert listed.returncode == 0, listed.stderr
    # list: never the token itself
    shown = run("tokens", "list", "--json", *where)
    assert shown.returncode == 0, shown.stderr
    tokens = json.loads(shown.stdout)
    assert [t["name"] for t in tokens] == ["nightly build"]
    assert token not in shown.stdout and tokens[0]["lastUsedAt"] is not None
    table = run("tokens", "list", *where)
    assert table.returncode == 0 and "nightly build" in table.stdout
    # a token cannot mint tokens
    again = run("tokens", "create", "more", "--server", server, env={"SANDBOX_TOKEN": token})
    assert again.returncode == 1
    assert "cannot create tokens" in again.stderr
    # revoke: the token stops working
    gone = run("tokens", "revoke", tokens[0]["id"], *where)
    assert gone.returncode == 0, gone.stderr
    refused = run("ls", "--server", server, env={"SANDBOX_TOKEN": token})
    assert refused.returncode == 1
    assert "401" in refused.stderr
    missing = run("tokens", "revoke", tokens[0]["id"] + "0", *where)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_bad_expiry_is_a_clear_error(server: str, tmp_path: Path) -> None:
    where = ["--server", server, "--data-dir", str(tmp_path / "data")]
    out = run("tokens", "create", "x", "--expires-in-days", "0", *where)
    assert out.returncode == 1
    assert "from 1 to 365" in out.stderr and "invalid-expiry" in out.stderr
