"""Cgroups.prime on this machine's real cgroup hierarchy: the primer takes the kernel's
cgroup lock by moving itself to where it already is, so nothing of the server moves,
and a launcher that joins a sandbox's cgroup afterwards lands in it. Skipped, with the
reason, where this server may not make cgroups (not root, or no writable hierarchy)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from openova_sandbox.terminal.cgroups import Cgroups, enter_argv, find

BASES = find()
pytestmark = pytest.mark.skipif(
    not BASES, reason="no cgroup hierarchy here lets this process make cgroups"
)


def threads_cgroups() -> dict[str, str]:
    """Every thread of this process and the cgroups it is in."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            out[task.name] = (task / "cgroup").read_text()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return out


def test_priming_moves_no_thread_of_the_server_and_a_join_still_lands() -> None:
    groups = Cgroups(BASES, processes=64)
    try:
        before = threads_cgroups()
        procs = groups.prepare("prime-test/box", memory=64 << 20, cpu="")
        primer = groups.prime()
        assert primer is not None, "priming was refused on a hierarchy this server writes"
        primer.join(10)
        assert not primer.is_alive()
        after = threads_cgroups()
        assert {t: after[t] for t in before if t in after} == {
            t: before[t] for t in before if t in after
        }
        launched = subprocess.run(
            [*enter_argv(procs), "cat", "/proc/self/cgroup"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for path in procs:  # the launcher is in each of the sandbox's cgroups
            folder = str(Path(path).parent)
            assert any(folder.endswith(line.split(":", 2)[2]) for line in launched.splitlines())
        assert "prime-test/box" in launched
    finally:
        groups.close()
    assert groups._prime_fd is None
    assert os.getpid() > 0
