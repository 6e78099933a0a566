"""What embedded isolation (issue 12) costs a terminal, measured apart from the server.

Interleaved A/B on one machine, so load from elsewhere falls on both alike:

- spawn → first byte: ``PtyProcess.spawn`` of ``/bin/sh -c 'printf R; exec cat'`` until
  its first output byte, plain and in a sandbox (bubblewrap, its namespaces and mounts,
  ``prlimit`` and ``setsid --ctty``; with the sandbox's cgroups when this machine lets the
  server make them, as ``sandbox serve`` does, unless ``--no-cgroups``: joining a cgroup
  v1 hierarchy is a migration under the kernel's thread-group lock, a few ms each);
- keystroke round trip: one byte written to the PTY until ``cat`` echoes it back.

    .venv/bin/python bench/isolation.py [--rounds 40] [--keys 400] [--no-cgroups]

Not a test: nothing here asserts; the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import pct, table
from openova_sandbox.terminal.cgroups import Cgroups, find
from openova_sandbox.terminal.isolation import probe, wrap
from openova_sandbox.terminal.pty import PtyProcess, SpawnSpec


def _read(process: PtyProcess, timeout: float = 10.0) -> bytes:
    ready, _, _ = select.select([process.master_fd], [], [], timeout)
    if not ready:
        raise TimeoutError("no output")
    return process.read(4096) or b""


def _start(spec: SpawnSpec) -> tuple[PtyProcess, float]:
    started = time.perf_counter()
    process = PtyProcess.spawn(spec)
    while b"R" not in _read(process):
        pass
    return process, (time.perf_counter() - started) * 1000


def _keys(process: PtyProcess, n: int) -> list[float]:
    os.write(process.master_fd, b"stty raw -echo\n")
    time.sleep(0.2)
    while select.select([process.master_fd], [], [], 0.05)[0]:
        process.read(4096)
    times = []
    for i in range(n):
        key = bytes([97 + i % 26])
        started = time.perf_counter()
        os.write(process.master_fd, key)
        while key not in _read(process):
            pass
        times.append((time.perf_counter() - started) * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--keys", type=int, default=400)
    parser.add_argument(
        "--no-cgroups", action="store_true", help="as SANDBOX_ISOLATION_CGROUPS=false"
    )
    parser.add_argument("--cpu", default="4", help="the sandbox's CPU quota (default: 4)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        ws, home = data / "workspaces/b/box", data / "homes/b/box"
        ws.mkdir(parents=True)
        home.mkdir(parents=True)
        found = probe(data_dir=str(data), path_env=os.environ.get("PATH", "/usr/bin:/bin"))
        if found.policy is None:
            sys.exit(f"no isolation here: {found.reason}")
        groups = Cgroups({} if args.no_cgroups else find(), processes=1024)
        argv = ("/bin/sh", "-c", "printf R; exec cat")
        plain = SpawnSpec(argv=argv, cwd=str(ws), env={"PATH": "/usr/bin:/bin"})
        spawn: dict[str, list[float]] = {"plain": [], "sandbox": []}
        keys: dict[str, list[float]] = {"plain": [], "sandbox": []}
        try:
            for i in range(args.rounds):
                for kind in ("plain", "sandbox") if i % 2 else ("sandbox", "plain"):
                    spec = plain
                    if kind == "sandbox":
                        spec = wrap(
                            found.policy, plain, workspace=str(ws), home=str(home),
                            name="b/box", memory="1Gi", cpu=args.cpu,
                            cgroups=groups if groups.bases else None,
                        )  # fmt: skip
                    process, took = _start(spec)
                    spawn[kind].append(took)
                    if i < 4:  # a few terminals for keystrokes, in turn
                        keys[kind] += _keys(process, args.keys // 4)
                    process.signal(9)
                    os.kill(process.pid, 9)
                    process.poll()
                    while process.poll() is None:
                        time.sleep(0.001)
                    process.close()
                    # the kernel tears a sandbox's namespaces down after its last process
                    # is reaped; a spawn is not measured while that is still going on
                    time.sleep(0.1)
        finally:
            groups.close()
    rows = []
    for kind in ("plain", "sandbox"):
        s, k = spawn[kind], keys[kind]
        rows.append(
            (
                f"spawn → first byte, {kind} (median of {len(s)})",
                f"{statistics.median(s):.1f} ms (p90 {pct(s, 0.9):.1f})",
                "",
                None,
            )
        )
        rows.append(
            (
                f"keystroke round trip, {kind} ({len(k)})",
                f"p50 {pct(k, 0.5):.0f} / p99 {pct(k, 0.99):.0f} µs",
                "",
                None,
            )
        )
    cost = statistics.median(spawn["sandbox"]) - statistics.median(spawn["plain"])
    rows.append(("the sandbox's cost at spawn (medians)", f"{cost:+.1f} ms", "", None))
    rows.append(("cgroups used", ", ".join(groups.controllers) or "none", "", None))
    load = os.getloadavg()
    print(f"bench/isolation.py, {os.cpu_count()} CPUs, load {load[0]:.1f}")
    print(table(rows))


if __name__ == "__main__":
    main()
