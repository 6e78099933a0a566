"""How a terminal's process is started: posix_spawn (glibc) and the Popen fallback give
the child the same session, controlling terminal, cwd, fds and failures."""

from __future__ import annotations

import os
import select
import sys
import time

import pytest

from openova_sandbox.domain.errors import SpawnFailed
from openova_sandbox.terminal import pty

PROBE = (
    "import os, sys\n"
    "leaked = os.path.exists(f\"/proc/self/fd/{os.environ['LEAK']}\")\n"
    "tty = open('/dev/tty', 'rb')\n"  # fails without a controlling terminal
    "print(os.getsid(0) == os.getpid(), os.tcgetpgrp(0) == os.getpid(), os.getcwd(),"
    " os.environ.get('PROBE'), leaked, flush=True)\n"
)


@pytest.fixture(params=["posix_spawn", "popen"])
def spawn_path(request, monkeypatch):
    if request.param == "posix_spawn" and pty._spawn_libc() is None:
        pytest.skip("no glibc posix_spawn with chdir/closefrom here")
    if request.param == "popen":
        monkeypatch.setattr(pty, "_LIBC", None)
    return request.param


def _output(process: pty.PtyProcess, seconds: float = 10.0) -> bytes:
    out, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.master_fd], [], [], 0.1)
        if ready:
            data = process.read(4096)
            if not data:
                break
            out += data or b""
    return out


def test_the_child_leads_a_session_on_its_pty(spawn_path, tmp_path):
    leak = os.open(os.devnull, os.O_RDONLY)  # an inheritable fd of the server's
    os.set_inheritable(leak, True)
    env = {"PROBE": "yes", "LEAK": str(leak)}
    spec = pty.SpawnSpec(argv=(sys.executable, "-c", PROBE), cwd=str(tmp_path), env=env)
    try:
        process = pty.PtyProcess.spawn(spec)
    finally:
        os.close(leak)
    try:
        out = _output(process).decode()
        assert f"True True {tmp_path} yes False" in out, out
        deadline = time.monotonic() + 5
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.returncode == 0
    finally:
        process.close()


@pytest.mark.parametrize(
    ("argv", "cwd", "missing"),
    [(("no-such-agent-binary",), None, "no-such-agent-binary"), (("sh",), "/no/such", "/no/such")],
)
def test_what_cannot_start_says_what_is_missing(spawn_path, tmp_path, argv, cwd, missing):
    spec = pty.SpawnSpec(argv=argv, cwd=cwd or str(tmp_path), env={"PATH": "/usr/bin:/bin"})
    with pytest.raises(SpawnFailed, match=f"{missing} not found"):
        pty.PtyProcess.spawn(spec)


def test_read_into_fills_a_buffer_in_place(tmp_path):
    """The session's reads: ``None`` while nothing is ready, the count read into the
    buffer, then 0 once the process is gone (EIO on the master)."""
    code = "import sys, time; sys.stdin.readline(); print('abcdef', flush=True); time.sleep(0.2)"
    spec = pty.SpawnSpec(argv=(sys.executable, "-c", code), cwd=str(tmp_path), env={})
    process = pty.PtyProcess.spawn(spec)
    try:
        buffer = bytearray(64)
        room = memoryview(buffer)
        assert process.read_into(room) is None  # not written yet: nothing ready
        process.write(b"go\n")
        held, deadline = 0, time.monotonic() + 10
        while b"abcdef\r\n" not in buffer[:held] and time.monotonic() < deadline:
            select.select([process.master_fd], [], [], 0.1)
            held += process.read_into(room[held:]) or 0
        assert b"abcdef\r\n" in buffer[:held]
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        ends = [process.read_into(room[held:]) for _ in range(20)]
        assert 0 in ends and all(n in (0, None) for n in ends)
    finally:
        process.close()
