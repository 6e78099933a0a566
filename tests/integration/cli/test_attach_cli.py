"""`sandbox attach` from a real terminal: type, see output, resize, detach with Ctrl-]."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import websockets

from openova_sandbox.testing.server import free_port

SANDBOX = str(Path(sys.executable).parent / "sandbox")


def read_until(fd: int, needle: bytes, timeout: float = 15.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not seen in {seen[-400:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    assert needle in seen, seen[-400:]
    return seen


BROKEN = "opencode"  # its binary is a script the test removes after create


@contextlib.contextmanager
def serving(tmp_path: Path) -> Iterator[tuple[int, dict[str, str], list[str]]]:
    """A real `sandbox serve` whose aider is /bin/sh and whose opencode is the script
    ``<tmp>/opencode``; yields its port, env, data args."""
    agents = tmp_path / "agents.json"
    script = tmp_path / "opencode"
    script.write_text("#!/bin/sh\nexec cat\n")
    script.chmod(0o755)
    rows = [
        {"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"]},
        {"slug": BROKEN, "binary": str(script)},
    ]
    agents.write_text(json.dumps(rows))
    port = free_port()
    env = {**os.environ, "OPENOVA_SANDBOX_AGENTS_PATH": str(agents)}
    data = ["--data-dir", str(tmp_path / "data")]
    serve = subprocess.Popen(
        [SANDBOX, "serve", "--port", str(port), *data],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        while "/login?token=" not in (serve.stdout.readline() or "/login?token="):
            pass
        yield port, env, data
    finally:
        serve.terminate()
        serve.wait(timeout=20)


def attached(args: list[str], env: dict[str, str]) -> tuple[int, subprocess.Popen[bytes]]:
    """`sandbox <args>` on a new 27x91 pseudo-terminal: (its master fd, the process)."""
    primary, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 27, 91, 0, 0))
    process = subprocess.Popen(
        [SANDBOX, *args],
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    return primary, process


def create(server: list[str], env: dict[str, str], *, agent: str, name: str) -> None:
    created = subprocess.run(
        [SANDBOX, "create", "--agent", agent, "--name", name, *server],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert created.returncode == 0, created.stderr


def test_an_agent_that_cannot_start_is_explained_once_and_exits_1(tmp_path):
    with serving(tmp_path) as (port, env, data):
        server = ["--server", f"http://127.0.0.1:{port}", *data]
        create(server, env, agent=BROKEN, name="broken")
        (tmp_path / "opencode").unlink()  # uninstalled after create
        primary, attach = attached(["attach", "broken", *server], env)
        seen = read_until(primary, b"connection closed (1011)", timeout=60)
        assert b"cannot start the agent" in seen, seen[-400:]
        # the reason in full, once: written by the server, not repeated by the CLI
        assert seen.count(b"not installed") == 1, seen[-600:]
        assert b"[sandbox] connection closed (1011)" in seen
        assert attach.wait(timeout=10) == 1
        os.close(primary)


def test_the_agents_exit_code_is_printed_once(tmp_path):
    with serving(tmp_path) as (port, env, data):
        server = ["--server", f"http://127.0.0.1:{port}", *data]
        create(server, env, agent="aider", name="box")
        primary, attach = attached(["attach", "box", *server], env)
        read_until(primary, b"# ", timeout=60)
        os.write(primary, b"exit 5\r")
        seen = read_until(primary, b"[sandbox] agent exited with code 5")
        assert seen.count(b"exited with code 5") == 1
        assert attach.wait(timeout=10) == 0
        os.close(primary)


def test_attach_without_a_terminal_says_it_needs_one(tmp_path):
    with serving(tmp_path) as (port, env, data):
        server = ["--server", f"http://127.0.0.1:{port}", *data]
        create(server, env, agent="aider", name="box")
        piped = subprocess.run(
            [SANDBOX, "attach", "box", *server],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert piped.returncode == 1
        assert "needs a terminal" in piped.stderr and "Traceback" not in piped.stderr


def test_attach_types_resizes_and_detaches(tmp_path):
    with serving(tmp_path) as (port, env, data):
        server = ["--server", f"http://127.0.0.1:{port}", *data]
        create(server, env, agent="aider", name="box")
        deadline = time.monotonic() + 30  # each check starts a CLI process
        while (
            "running"
            not in subprocess.run(
                [SANDBOX, "get", "box", *server], env=env, capture_output=True, text=True
            ).stdout
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)

        primary, attach = attached(["attach", "box", *server], env)
        # the replay (the shell's prompt) arrives once the CLI is attached in raw mode;
        # typing earlier would be flushed by the switch to raw mode, as in any terminal
        read_until(primary, b"# ")
        os.write(primary, b"echo attached-$((20+1))\r")
        read_until(primary, b"attached-21")
        # the local window size reaches the agent apart from the keystrokes (the CLI
        # sends it once attached): ask again until it has arrived
        deadline = time.monotonic() + 15
        while True:
            os.write(primary, b"stty size\r")
            if b"27 91" in read_until(primary, b"# ", timeout=10):
                break
            assert time.monotonic() < deadline, "the local window size never reached the agent"
            time.sleep(0.1)
        os.write(primary, b"\x1d")  # Ctrl-]
        read_until(primary, b"detached")
        assert attach.wait(timeout=10) == 0
        os.close(primary)
        # the agent keeps running: its screen is still there for the next viewer
        token = subprocess.run(
            [
                SANDBOX,
                "token",
                "--sub",
                "local-x",
                "--email",
                "x@acme.com",
                "--org",
                "local",
                "--role",
                "org-admin",
                *data,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

        async def replay() -> bytes:
            url = f"ws://127.0.0.1:{port}/api/v1/sandbox/sessions/box/attach?access_token={token}"
            async with websockets.connect(url) as ws:
                return await asyncio.wait_for(ws.recv(), 10)

        assert b"attached-21" in asyncio.run(replay())
