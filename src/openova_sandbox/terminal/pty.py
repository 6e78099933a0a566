"""The process side of a terminal: a real PTY, its process group, and how it ends.

Why ``subprocess`` + ``os.openpty`` and not ``pty.fork``: Popen reports exec failures
(missing binary, bad cwd) as exceptions in the parent, and ``start_new_session=True``
gives the child its own session and process group. The child takes the slave as its
controlling terminal in ``preexec_fn`` (``TIOCSCTTY``) so job control and ``^C`` behave as
in any terminal.

Termination is a ladder with bounded waits: ``SIGHUP`` (the terminal went away), then
``SIGTERM`` (up to ``term_grace`` seconds), then ``SIGKILL``. Each step signals the
process group *and* every process still in the child's session (a job-control shell puts
jobs in their own groups, and a grandchild must not outlive its terminal). "Gone" means
the main process was reaped and no non-zombie process is left in the session.

Exit is observed through a pidfd (Linux ≥ 5.3), so no thread per child is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from ..domain.errors import SpawnFailed

log = structlog.get_logger(__name__)

HUP_GRACE = 0.5
TERM_GRACE = 5.0
KILL_GRACE = 2.0


@dataclass(frozen=True)
class SpawnSpec:
    """Everything needed to start one terminal process (env is never logged)."""

    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    rows: int = 24
    cols: int = 80


def _take_controlling_tty() -> None:  # runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _winsize(rows: int, cols: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


_SCAN_MIN_TTL = 0.02
_scan_cache: tuple[float, float, dict[int, list[int]]] = (0.0, 0.0, {})


def _scan_sessions() -> dict[int, list[int]]:
    """Live (non-zombie) processes by session id, from /proc.

    Shared by every terminating session and reused for a while (at least 20 ms, and at
    least five times as long as the last scan took), so stopping a thousand terminals at
    once costs a few scans of /proc, not a thousand per polling round.
    """
    global _scan_cache
    now = time.monotonic()
    taken_at, took, table = _scan_cache
    if now - taken_at < max(_SCAN_MIN_TTL, 5 * took):
        return table
    table = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        # state ppid pgrp session ...
        if len(fields) >= 4 and fields[0] not in (b"Z", b"X"):
            table.setdefault(int(fields[3]), []).append(int(entry))
    done = time.monotonic()
    _scan_cache = (done, done - now, table)
    return table


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    return _scan_sessions().get(sid, [])


def exit_status(returncode: int) -> int:
    """Shell convention: a death by signal N is reported as 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class PtyProcess:
    """One child process on its own PTY; the master fd is non-blocking."""

    def __init__(self, popen: subprocess.Popen[bytes], master_fd: int) -> None:
        self._popen = popen
        self.master_fd = master_fd
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the child leads its session and group
        self.pidfd: int | None
        try:
            self.pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            self.pidfd = None
        self._closed = False

    @classmethod
    def spawn(cls, spec: SpawnSpec) -> PtyProcess:
        """Start ``spec.argv`` on a new PTY; :class:`SpawnFailed` says why it could not."""
        if not spec.argv:
            raise SpawnFailed("nothing to run: empty command")
        master, slave = os.openpty()
        try:
            fcntl.ioctl(master, termios.TIOCSWINSZ, _winsize(spec.rows, spec.cols))
            popen = subprocess.Popen(
                list(spec.argv),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=spec.cwd or None,
                env=dict(spec.env),
                start_new_session=True,
                preexec_fn=_take_controlling_tty,
                close_fds=True,
            )
        except FileNotFoundError as exc:
            os.close(master)
            missing = exc.filename or spec.argv[0]
            raise SpawnFailed(f"cannot start {spec.argv[0]!r}: {missing} not found") from exc
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(master)
            raise SpawnFailed(f"cannot start {spec.argv[0]!r}: {exc}") from exc
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        log.info("pty.spawned", pid=popen.pid, argv0=spec.argv[0], cwd=spec.cwd)
        return cls(popen, master)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def poll(self) -> int | None:
        """Reap the main process if it has exited; its raw return code or ``None``."""
        return self._popen.poll()

    def read(self, size: int) -> bytes | None:
        """Up to ``size`` bytes; ``None`` when nothing is ready; ``b""`` at end of output."""
        try:
            return os.read(self.master_fd, size)
        except BlockingIOError:
            return None
        except OSError:  # EIO: every slave fd is closed
            return b""

    def write(self, data: bytes | memoryview) -> int:
        """Write what the PTY accepts now; 0 when it is full (caller keeps the rest)."""
        try:
            return os.write(self.master_fd, data)
        except BlockingIOError:
            return 0

    def foreground_pgid(self) -> int:
        try:
            return os.tcgetpgrp(self.master_fd)
        except OSError:
            return self.pgid

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size and tell the foreground process group (``SIGWINCH``)."""
        fcntl.ioctl(self.master_fd, termios.TIOCSWINSZ, _winsize(rows, cols))
        self.signal(signal.SIGWINCH)

    def signal(self, sig: int) -> None:
        """Signal the terminal's foreground process group (where ``^C`` would go)."""
        for target in {self.foreground_pgid(), self.pgid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(target, sig)

    def _signal_everything(self, sig: int) -> None:
        targets = set(_session_members(self.pid))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        if self._popen.returncode is None:
            targets.add(self.pid)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def gone(self) -> bool:
        """Main process reaped and nothing left alive in its session."""
        if self.poll() is None:
            return False
        members = [pid for pid in _session_members(self.pid) if pid != self.pid]
        if not members:
            return True
        # The shared scan may be older than the last signal: confirm the survivors.
        alive = False
        for pid in members:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
            alive = True
            break
        return not alive

    async def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            if self.gone():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def terminate(
        self,
        *,
        hup_grace: float = HUP_GRACE,
        term_grace: float = TERM_GRACE,
        kill_grace: float = KILL_GRACE,
    ) -> int | None:
        """HUP → TERM → KILL the whole session with bounded waits; the return code."""
        ladder = (
            (signal.SIGHUP, hup_grace),
            (signal.SIGTERM, term_grace),
            (signal.SIGKILL, kill_grace),
        )
        for sig, grace in ladder:
            if self.gone():
                break
            self._signal_everything(sig)
            if await self._wait_gone(grace):
                break
        else:
            log.warning("pty.terminate.leftover", pid=self.pid)
        return self.returncode

    def close(self) -> None:
        """Release the fds (the process must already be handled)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.close(self.master_fd)
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
