"""What the benches share: reading a process's RSS and CPU time from /proc, a
percentile, the Markdown table their reports print, and a run bounded in time in a
temporary folder whose figures end up printed (and as JSON when asked)."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# A report row: measure, result, target ("" for none) and whether the target is met.
Row = tuple[str, str, str, Any]


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def precise_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process to the nanosecond, its ended threads included:
    its CPU-time clock (``clock_getcpuclockid``: ``(~pid << 3) | CPUCLOCK_SCHED``), for
    windows too short for ``cpu_seconds``' clock ticks (10 ms: 1.2 ms/MB of an 8 MiB
    burst)."""
    return time.clock_gettime((~pid << 3) | 2)


task_cpu_seconds = precise_cpu_seconds  # its first name (when it summed the threads' schedstat)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(rows: list[Row]) -> str:
    """The report as a Markdown table; a row with no target gets no verdict."""
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [
        f"| {'measure':<{width}} | {'result':<{vwidth}} | target | verdict |",
        f"|{'-' * (width + 2)}|{'-' * (vwidth + 2)}|---|---|",
    ]
    for name, value, target, ok in rows:
        verdict = "" if target == "" else ("PASS" if ok else "FAIL")
        lines.append(f"| {name:<{width}} | {value:<{vwidth}} | {target} | {verdict} |")
    return "\n".join(lines)


def run_header(name: str, started: float) -> str:
    """The first line of a bench's report: which bench, when, on what, under what load,
    and how long the run took (``started``: its ``time.monotonic()`` at the start)."""
    load = os.getloadavg()
    return (
        f"{name}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, load {load[0]:.1f}/{load[1]:.1f}, "
        f"Python {sys.version.split()[0]}, run {time.monotonic() - started:.0f} s"
    )


def bounded_run(
    run: Callable[[Path], T],
    *,
    deadline: int,
    prefix: str,
    cleanup: Callable[[], None] | None = None,
) -> T:
    """``run(folder)`` in a fresh temporary folder, ended by a ``TimeoutError`` after
    ``deadline`` seconds (SIGALRM; a bench stops its processes on the way out);
    ``cleanup`` runs either way."""

    def give_up(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the bench did not finish in {deadline} s")

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(deadline)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            return run(Path(tmp))
        finally:
            signal.alarm(0)
            if cleanup is not None:
                cleanup()


def publish(
    name: str, started: float, results: Mapping[str, Any], report: str, json_path: Path | None
) -> None:
    """The run's raw results to ``json_path`` (when given), then its header and report."""
    if json_path:
        json_path.write_text(json.dumps(results))
    print(run_header(name, started))
    print(report)
