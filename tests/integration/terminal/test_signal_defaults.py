"""A server started with signals ignored or blocked (``nohup``, a parent that set
SIG_IGN) does not hand that to its terminals: ignored signals survive exec, so without
a reset ^C would not stop an agent. Each spawn path is run in a real process that
ignores SIGINT and friends and blocks SIGQUIT, and a terminal's ``cat`` gets ^C."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pytest

from openova_sandbox.terminal import pty

# The "server": ignores what nohup and shells' background jobs ignore, blocks SIGQUIT,
# starts `cat` on a terminal, reads its signal state, types ^C and reports the exit.
SERVER = r"""
import asyncio, os, select, signal, sys, time
from openova_sandbox.terminal import pty
from openova_sandbox.terminal.pty import PtyProcess, SpawnSpec

path = sys.argv[1]
for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE,
            signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1):
    signal.signal(sig, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGQUIT, signal.SIGUSR2})
assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
if path == "popen":
    pty._LIBC = None
spec = SpawnSpec(argv=("/bin/cat",), cwd=os.getcwd(), env={"PATH": "/usr/bin:/bin"})
if path == "bwrap":
    from openova_sandbox.terminal.isolation import probe, wrap
    data = sys.argv[2]
    ws, home = data + "/ws", data + "/home"
    os.makedirs(ws); os.makedirs(home)
    found = probe(data_dir=data + "/data", path_env="/usr/bin:/bin")
    assert found.policy is not None, found.reason
    spec = wrap(found.policy, SpawnSpec(argv=("/bin/sh", "-c", "echo READY; exec cat"),
                cwd=ws, env={"PATH": "/usr/bin:/bin"}), workspace=ws, home=home, name="acme/box")
process = PtyProcess.spawn(spec)
out = b""
if path == "bwrap":
    deadline = time.monotonic() + 20
    while b"READY" not in out:
        assert time.monotonic() < deadline, out
        if select.select([process.master_fd], [], [], 0.1)[0]:
            out += process.read(4096) or b""
else:
    status = open(f"/proc/{process.pid}/status").read().splitlines()
    fields = dict(line.split(":\t", 1) for line in status if ":\t" in line)
    print("RESULT SigIgn", int(fields["SigIgn"], 16), "SigBlk", int(fields["SigBlk"], 16), flush=True)
process.write(b"\x03")
deadline = time.monotonic() + 20
while process.poll() is None and time.monotonic() < deadline:
    select.select([process.master_fd], [], [], 0.05)
    try:
        process.read(4096)
    except OSError:
        pass
print("RESULT EXIT", process.poll(), flush=True)
if process.poll() is None:
    asyncio.run(process.terminate())
"""


def _run(path: str, tmp_path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SERVER, path, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    # (the spawn's log lines go to stdout too)
    return [
        w
        for line in done.stdout.splitlines()
        if line.startswith("RESULT ")
        for w in line.split()[1:]
    ]


@pytest.mark.parametrize("path", ["posix_spawn", "popen"])
def test_a_terminal_starts_with_default_signals_and_ctrl_c_stops_it(path, tmp_path):
    if path == "posix_spawn" and pty._spawn_libc() is None:
        pytest.skip("no glibc posix_spawn with chdir/closefrom here")
    out = _run(path, tmp_path)
    assert out[0] == "SigIgn" and out[2] == "SigBlk", out
    # glibc's posix_spawn leaves its two internal signals (32, 33) ignored: no program
    # can use them; every signal a program can name is at its default and unblocked
    nameable = sum(1 << (s - 1) for s in signal.valid_signals() if s < 32 or s >= signal.SIGRTMIN)
    assert int(out[1]) & nameable == 0, out
    assert int(out[3]) == 0, out
    assert out[4:] == ["EXIT", str(-signal.SIGINT)], out


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing")
def test_a_sandboxed_agent_gets_ctrl_c_from_a_server_that_ignores_it(tmp_path):
    out = _run("bwrap", tmp_path)
    assert out[0] == "EXIT" and out[1] != "None", out
