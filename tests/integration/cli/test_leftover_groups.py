"""An agent that ignores SIGHUP does not outlive a kill -9 of `sandbox serve`: the
next start ends the process groups the killed run recorded in its data dir (issue 11)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from openova_sandbox.testing.server import free_port
from support.cli import run_sandbox, serve_until_sign_in_link
from support.fake_agents import write_stand_ins

SESSIONS = "/api/v1/sandbox/sessions"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_an_agent_ignoring_sighup_is_ended_when_serve_starts_again(tmp_path):
    pidfile = tmp_path / "agent.pid"
    script = f"trap '' HUP TERM; echo $$ > {pidfile}; exec sleep 300"
    agents = write_stand_ins(tmp_path / "agents.json", "/bin/sh", ("-c", script))
    data = tmp_path / "data"
    port = free_port()
    # unisolated: the record of groups is what ends such an agent (an isolated one dies
    # with the server, below)
    first = serve_until_sign_in_link(data, port, agents)
    survivor = 0
    try:
        out = run_sandbox(
            "token", "--sub", "u-1", "--email", "d@acme.com", "--org", "acme",
            "--data-dir", str(data),
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {out.stdout.strip()}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            made = http.post(SESSIONS, headers=headers, json={"agent": "aider", "name": "box"})
            assert made.status_code == 201, made.text
            deadline = time.monotonic() + 20
            while http.get(f"{SESSIONS}/box", headers=headers).json().get("phase") != "Ready":
                assert time.monotonic() < deadline, "sandbox not ready"
                time.sleep(0.1)
            opened = http.post(
                f"{SESSIONS}/box/terminals", headers=headers, json={"agent": "aider"}
            )
            assert opened.status_code in (200, 201), opened.text
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline, "agent did not start"
            time.sleep(0.05)
        survivor = int(pidfile.read_text())
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        time.sleep(0.5)
        assert _alive(survivor), "the agent should have survived the kill (it ignores SIGHUP)"

        second = serve_until_sign_in_link(data, port, agents)
        try:
            deadline = time.monotonic() + 10
            while _alive(survivor):
                assert time.monotonic() < deadline, "the leftover agent is still running"
                time.sleep(0.05)
        finally:
            second.terminate()
            second.wait(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
        if survivor and _alive(survivor):
            os.kill(survivor, signal.SIGKILL)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_an_isolated_agent_ignoring_sighup_dies_with_a_killed_serve(tmp_path):
    """In a sandbox (issue 12) the launcher dies with its parent (``--die-with-parent``),
    and with it the sandbox's PID namespace: nothing waits for the next start."""
    script = "trap '' HUP TERM; exec sleep 313.25"
    agents = write_stand_ins(tmp_path / "agents.json", "/bin/sh", ("-c", script))
    data = tmp_path / "data"
    port = free_port()
    first = serve_until_sign_in_link(data, port, agents, isolation="bwrap")
    try:
        out = run_sandbox(
            "token", "--sub", "u-1", "--email", "d@acme.com", "--org", "acme",
            "--data-dir", str(data),
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {out.stdout.strip()}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            made = http.post(SESSIONS, headers=headers, json={"agent": "aider", "name": "box"})
            assert made.status_code == 201, made.text
            deadline = time.monotonic() + 20
            while http.get(f"{SESSIONS}/box", headers=headers).json().get("phase") != "Ready":
                assert time.monotonic() < deadline, "sandbox not ready"
                time.sleep(0.1)
            opened = http.post(
                f"{SESSIONS}/box/terminals", headers=headers, json={"agent": "aider"}
            )
            assert opened.status_code in (200, 201), opened.text
        deadline = time.monotonic() + 10
        while not _running("^sleep 313.25$"):
            assert time.monotonic() < deadline, "agent did not start"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _running("^sleep 313.25$"):
            assert time.monotonic() < deadline, "the isolated agent outlived its server"
            time.sleep(0.05)
    finally:
        if first.poll() is None:
            first.kill()
        subprocess.run(["pkill", "-KILL", "-f", "^sleep 313.25$"], check=False)


def _running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0
