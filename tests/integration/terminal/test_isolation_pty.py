"""A sandboxed terminal's process side (terminal/pty.py with terminal/isolation.py): the
agent leads its own session on the PTY inside bubblewrap, the signal route never hits
the launcher, and the termination ladder gives the agent its HUP and TERM before the
launcher's SIGKILL ends the namespace."""

from __future__ import annotations

import asyncio
import select
import shutil
import signal
import time
from pathlib import Path

import pytest

from openova_sandbox.terminal.isolation import probe, wrap
from openova_sandbox.terminal.leftovers import start_time
from openova_sandbox.terminal.pty import PtyProcess, SpawnSpec, _sandbox_members

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing")


@pytest.fixture
def sandbox(tmp_path):
    data = tmp_path / "data"
    ws, home = data / "workspaces/acme/box", data / "homes/acme/box"
    ws.mkdir(parents=True)
    home.mkdir(parents=True)
    found = probe(data_dir=str(data), path_env="/usr/bin:/bin")
    assert found.policy is not None, found.reason

    def spawn(script: str) -> PtyProcess:
        spec = SpawnSpec(argv=("/bin/sh", "-c", script), cwd=str(ws), env={"PATH": "/usr/bin:/bin"})
        wrapped = wrap(found.policy, spec, workspace=str(ws), home=str(home), name="acme/box")
        return PtyProcess.spawn(wrapped)

    return spawn, ws


def read_until(process: PtyProcess, needle: bytes, timeout: float = 10) -> bytes:
    out, deadline = b"", time.monotonic() + timeout
    while needle not in out:
        assert time.monotonic() < deadline, out
        if select.select([process.master_fd], [], [], 0.1)[0]:
            out += process.read(4096) or b""
    return out


def test_the_agent_leads_its_session_on_the_pty(sandbox):
    spawn, _ = sandbox
    process = spawn(
        "ps -o pid=,sid=,tpgid=,comm= -p $$; printf 'SID='; cat /proc/self/stat | cut -d' ' -f6; sleep 30"
    )
    try:
        out = read_until(process, b"SID=")
        if b"\n" not in out.split(b"SID=", 1)[1]:  # (the line may have come in one read)
            out += read_until(process, b"\n")
        # inside: the shell is the session leader, the foreground group is its own
        pid, sid, tpgid, _ = out.split(b"\r\n")[0].split()
        assert pid == sid == tpgid, out
        # outside: the PTY's session is the agent's, not the launcher's
        assert process._terminal_session() not in (None, process.pid)
        assert process.foreground_pgid() != process.pgid
    finally:
        asyncio.run(process.terminate())
        process.close()


def test_the_signal_route_reaches_the_agent_never_the_launcher(sandbox):
    spawn, _ = sandbox
    process = spawn("trap 'echo GOT-INT' INT; echo READY; while :; do sleep 0.05; done")
    try:
        read_until(process, b"READY")
        process.signal(signal.SIGINT)
        read_until(process, b"GOT-INT")
        assert process.poll() is None  # the launcher lives on
    finally:
        asyncio.run(process.terminate())
        process.close()


def test_the_ladder_gives_term_its_grace_and_leaves_nothing(sandbox):
    spawn, ws = sandbox
    script = (
        "trap '' HUP; trap 'echo cleaned > cleanup; exit 0' TERM; "
        "(trap '' HUP TERM; exec sleep 600) & echo READY; while :; do sleep 0.05; done"
    )
    process = spawn(script)
    read_until(process, b"READY")
    # launcher, the namespace's init, the shell, its sleep (the process table the ladder
    # reads is shared and reused for a few ms: wait until it has been read since)
    deadline = time.monotonic() + 10
    while True:
        found = _sandbox_members(process.pid)
        # each member as it is now; one already gone (a ``sleep 0.05`` of the loop, or a
        # pid of the shared table's last read) has nothing left to check
        members = {pid: at for pid in found if (at := start_time(pid)) is not None}
        if len(members) >= 4:
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    started = time.monotonic()
    asyncio.run(process.terminate(hup_grace=0.3, term_grace=1.0, kill_grace=2.0))
    took = time.monotonic() - started
    process.close()
    # TERM reached the shell while the launcher was spared: its handler ran
    assert (Path(ws) / "cleanup").read_text() == "cleaned\n"
    # the sleep ignored both and was killed with the namespace
    assert process.gone() and took < 4
    for pid, started in members.items():  # none alive (a reused pid starts later)
        assert start_time(pid) != started, pid


@pytest.mark.parametrize(("org", "reached"), [("online-org", True), ("offline-org", False)])
def test_an_offline_org_has_loopback_only(tmp_path, org, reached):
    import socket

    data = tmp_path / "data"
    ws = data / "workspaces" / org / "box"
    ws.mkdir(parents=True)
    found = probe(data_dir=str(data), path_env="/usr/bin:/bin", offline_orgs=("offline-org",))
    assert found.policy is not None
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    script = (
        f"if exec 3<>/dev/tcp/127.0.0.1/{port}; then echo REACHED; else echo REFUSED; fi;"
        " ip -o link 2>/dev/null | wc -l; echo DONE"
    )
    spec = SpawnSpec(argv=("/bin/bash", "-c", script), cwd=str(ws), env={"PATH": "/usr/bin:/bin"})
    process = PtyProcess.spawn(wrap(found.policy, spec, workspace=str(ws), org=org))
    try:
        out = read_until(process, b"DONE")
    finally:
        listener.close()
        asyncio.run(process.terminate())
        process.close()
    assert (b"REACHED" in out) is reached, out
    assert (b"REFUSED" in out) is not reached, out
