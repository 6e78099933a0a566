"""`sandbox serve` killed with SIGKILL right after it answered creates loses none of
them: on SQLite the store commits each create (fsynced, in its commit thread; issue 11)
before the 201 leaves. After the restart the controller takes them to Ready again."""

from __future__ import annotations

import signal
import time

import httpx

from openova_sandbox.testing.server import free_port
from support.cli import run_sandbox, serve_until_sign_in_link
from support.fake_agents import write_stand_ins

SESSIONS = "/api/v1/sandbox/sessions"


def test_creates_answered_before_a_kill_are_kept(tmp_path):
    agents = write_stand_ins(tmp_path / "agents.json", "/bin/sh", ("-c", "exec cat"))
    data = tmp_path / "data"
    port = free_port()
    first = serve_until_sign_in_link(data, port, agents)
    made: dict[str, str] = {}
    try:
        out = run_sandbox(
            "token", "--sub", "u-1", "--email", "d@acme.com", "--org", "acme",
            "--data-dir", str(data),
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {out.stdout.strip()}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for name in ("one", "two", "three"):
                answer = http.post(SESSIONS, headers=headers, json={"agent": "aider", "name": name})
                assert answer.status_code == 201, answer.text
                made[name] = answer.json()["createdAt"]
        first.send_signal(signal.SIGKILL)  # at once: the controller may not have run yet
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()

    second = serve_until_sign_in_link(data, port, agents)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for name, created in made.items():
                deadline = time.monotonic() + 30
                while True:
                    item = http.get(f"{SESSIONS}/{name}", headers=headers)
                    assert item.status_code == 200, item.text
                    assert item.json()["createdAt"] == created
                    if item.json().get("phase") == "Ready":
                        break
                    assert time.monotonic() < deadline, f"{name} not Ready after the restart"
                    time.sleep(0.05)
    finally:
        second.terminate()
        second.wait(timeout=20)
