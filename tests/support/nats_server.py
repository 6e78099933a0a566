"""A real, throwaway ``nats-server -js`` for tests (the Debian package's binary).

It listens on a free port of 127.0.0.1 only, keeps its JetStream store in a temporary
directory, and can be stopped and started again on the same port and store (a restart:
what was stored survives). Without the binary the tests are skipped with the reason, or
fail under ``SANDBOX_TEST_REQUIRE_ALL=1`` (CI installs it: .ci/run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from support.postgres import REQUIRE_ALL, free_port

CANDIDATES = ("/usr/sbin/nats-server", "/usr/bin/nats-server")


def find_binary() -> str | None:
    found = shutil.which("nats-server")
    if found:
        return found
    return next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)


def skip_or_fail(reason: str) -> NoReturn:
    import pytest

    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ALL}=1: the JetStream tests are mandatory)")
    print(f"\nskipping JetStream tests: {reason}")
    pytest.skip(reason)


class NatsServer:
    """``start()``, ``stop()`` (SIGTERM, waited for), ``kill()``, ``url``."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="sandbox-nats-"))
        self.port = free_port()
        self.log = self.root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        command = [
            self.binary,
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.root / "store"),
            "-l",
            str(self.log),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.tail()}")
            if "Server is ready" in self.tail(20_000):
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=1),
                ):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"nats-server not ready within {timeout}s: {self.tail()}")

    def tail(self, size: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def remove(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_nats() -> Iterator[NatsServer]:
    binary = find_binary()
    if binary is None:
        skip_or_fail("nats-server not found on PATH or in /usr/sbin (install 'nats-server')")
    server = NatsServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.remove()
