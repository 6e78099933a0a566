"""Process groups a terminal server spawned, recorded in its data dir so the next start
can end the ones a previous run left behind (issue 11).

A server killed with SIGKILL cannot end its terminals; closing their PTYs sends SIGHUP,
and an agent that ignores it would run on beside the one the new server starts. Each
spawned group is recorded as ``<pgid> <start time>`` (the leader's start time from
``/proc/<pid>/stat``, clock ticks since boot), one line each, in
``<data dir>/terminal-groups``; at start every recorded group still alive is sent
SIGTERM, then SIGKILL after a grace, and the file is emptied.

Only processes that are members of the recorded group or session and were started no
earlier than its leader are signalled, and none when a different process now leads that
id (its start time differs): a reused pid is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

FILE_NAME = "terminal-groups"
GRACE = 2.0


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(pgrp, session, start time) of a live, non-zombie ``pid``; ``None`` otherwise."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    # state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime priority nice num_threads itrealvalue starttime
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[2]), int(fields[3]), int(fields[19])


def start_time(pid: int) -> int | None:
    found = _stat(pid)
    return found[2] if found is not None else None


class ProcessGroups:
    """The record of this server's spawned process groups, kept in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._groups: dict[int, int] = {}

    def record(self, pgid: int) -> None:
        started = start_time(pgid)
        if started is None:
            return
        self._groups[pgid] = started
        self._write()

    def forget(self, pgid: int) -> None:
        if self._groups.pop(pgid, None) is not None:
            self._write()

    def _write(self) -> None:
        text = "".join(f"{pgid} {started}\n" for pgid, started in self._groups.items())
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("terminal.groups.unrecorded", error=str(exc))

    def _recorded(self) -> dict[int, int]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return {}
        found: dict[int, int] = {}
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                found[int(parts[0])] = int(parts[1])
        return found

    def end_leftovers(self, *, grace: float = GRACE) -> list[int]:
        """End what is alive of the groups a previous run recorded; the pids signalled."""
        recorded = self._recorded()
        if not recorded:
            return []
        targets = signalled = _survivors(recorded)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while targets and time.monotonic() < deadline:
            time.sleep(0.05)
            targets = [pid for pid in targets if _stat(pid) is not None]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._groups.clear()
        self._write()
        return signalled


def _survivors(recorded: dict[int, int]) -> list[int]:
    """Live processes of the recorded groups (or their sessions), reused ids excluded."""
    if os.getpid() in recorded:
        recorded = {k: v for k, v in recorded.items() if k != os.getpid()}
    live: dict[int, int] = {}
    for pgid, started in recorded.items():
        leader = start_time(pgid)
        if leader is None or leader == started:
            live[pgid] = started
    found: list[int] = []
    if not live:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        info = _stat(pid)
        if info is None:
            continue
        pgrp, session, started = info
        for group in (pgrp, session):
            if group in live and started >= live[group]:
                found.append(pid)
                break
    if found:
        log.warning("terminal.groups.leftover", pids=found)
    return found
