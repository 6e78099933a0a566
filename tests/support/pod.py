"""A real ``sandbox pty-server`` process (a sandbox pod's terminal server) on 127.0.0.1,
started with exactly the environment a test gives it (usually what the operator renders
for the pod), for the tests of what runs in a pod."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from support.waiting import wait_for

SANDBOX = str(Path(sys.executable).parent / "sandbox")


@contextlib.contextmanager
def pty_server_process(env: dict[str, str], port: int) -> Iterator[tuple[str, int]]:
    """The server's URL and pid once it answers ``/healthz``; stopped on the way out."""
    proc = subprocess.Popen(
        [SANDBOX, "pty-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/healthz").status_code == 200
        return False

    try:
        wait_for("pty-server answering /healthz", healthy)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def pty_server(env: dict[str, str], port: int) -> Iterator[str]:
    """The server's URL once it answers ``/healthz``."""
    with pty_server_process(env, port) as (url, _):
        yield url
