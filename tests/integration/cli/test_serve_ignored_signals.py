"""`sandbox serve` started the way `nohup cmd &` or a script's background job starts it
(SIGHUP, SIGINT and SIGQUIT ignored) does not hand that to its sandboxes: ignored signals
survive exec, and an agent that inherited them would not stop on ^C or ^\\ in its own
terminal. (uvicorn catches SIGINT and SIGTERM while it serves; SIGQUIT and SIGHUP stay
ignored in the server, so ^\\ is what shows it end to end.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import httpx
import pytest
import websockets

from openova_sandbox.testing.server import free_port
from support.cli import SANDBOX, run_sandbox
from support.fake_agents import write_stand_ins

SESSIONS = "/api/v1/sandbox/sessions"


def _ignore_like_nohup_in_background() -> None:  # in the child, before exec
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)


@pytest.fixture
def serve(tmp_path):
    agents = write_stand_ins(tmp_path / "agents.json", "/bin/cat")
    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "OPENOVA_SANDBOX_AGENTS_PATH": str(agents), "SANDBOX_ISOLATION": "none"}
    process = subprocess.Popen(
        [SANDBOX, "serve", "--port", str(port), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=_ignore_like_nohup_in_background,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while "/login?token=" not in (line := process.stdout.readline()):
            assert line, "serve exited"
            assert time.monotonic() < deadline
        yield port, data
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_ctrl_backslash_ends_an_agent_of_a_server_that_ignores_it(serve):
    port, data = serve
    token = run_sandbox(
        "token", "--sub", "u-1", "--email", "d@acme.com", "--org", "acme",
        "--data-dir", str(data),
    ).stdout.strip()  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        made = http.post(SESSIONS, headers=headers, json={"agent": "aider", "name": "box"})
        assert made.status_code == 201, made.text
        deadline = time.monotonic() + 30
        while http.get(f"{SESSIONS}/box", headers=headers).json().get("phase") != "Ready":
            assert time.monotonic() < deadline, "not Ready"
            time.sleep(0.05)
    url = f"ws://127.0.0.1:{port}{SESSIONS}/box/attach?access_token={token}"

    async def scenario() -> tuple[int | None, str]:
        async with asyncio.timeout(30), websockets.connect(url) as ws:
            await ws.send(b"ping-1\r")
            seen = b""
            while seen.count(b"ping-1") < 2:  # the terminal's echo, then cat's copy
                frame = await ws.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()
            await ws.send(b"\x1c")  # ^\: SIGQUIT to the foreground group (cat)
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed:
                pass
            return ws.close_code, ws.close_reason or ""

    code, reason = asyncio.run(scenario())
    assert (code, reason) == (1000, f"agent exited with code {128 + signal.SIGQUIT}")
