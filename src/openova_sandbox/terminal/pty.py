"""The process side of a terminal: a real PTY, its process group, and how it ends.

Why ``posix_spawn`` (or ``subprocess``) + ``os.openpty`` and not ``pty.fork``: exec
failures (missing binary, bad cwd) are reported as exceptions in the parent, and the
child gets its own session and process group. The child takes the slave as its
controlling terminal so job control and ``^C`` behave as in any terminal.

With glibc (≥ 2.34) the child is started by ``posix_spawn`` (a ``vfork``-style clone:
no copy of the server's page tables, no Python in the child; issue 10): its own session
(``POSIX_SPAWN_SETSID``), then it opens the slave by path, which makes it the
controlling terminal of that new session, changes to the cwd and closes every other fd.
Elsewhere ``subprocess.Popen`` forks and takes the terminal in ``preexec_fn``
(``TIOCSCTTY``); a fork of a large server costs milliseconds more.

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
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from ..domain.errors import SpawnFailed

if TYPE_CHECKING:
    import ctypes

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
    # argv is a sandbox launcher (bubblewrap, terminal/isolation.py) whose command takes
    # the terminal as its own controlling terminal inside: the launcher gets none
    sandboxed: bool = False


# Ignored signals survive exec: a server started with SIGINT ignored (``nohup``, a parent
# that set SIG_IGN) would hand that to every terminal, and ^C would not stop an agent.
# Every terminal process starts with every signal at its default and none blocked.
_RESET_SIGNALS = tuple(
    s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)
)


def _reset_signals() -> None:  # runs in the child between fork and exec
    for sig in _RESET_SIGNALS:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _take_controlling_tty() -> None:  # runs in the child between fork and exec
    _reset_signals()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _Spawned:
    """A child started by :func:`_posix_spawn`: the part of ``Popen`` a terminal uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: as Popen reports it
                self.returncode = 0
            else:
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


_SPAWN_SETSIGDEF = 0x04  # glibc's <spawn.h>
_SPAWN_SETSIGMASK = 0x08
_SPAWN_SETSID = 0x80
_OPAQUE = 1024  # bytes for posix_spawnattr_t / posix_spawn_file_actions_t (336 / 80)


def _libc() -> ctypes.CDLL | None:
    """glibc with what :func:`_posix_spawn` needs (chdir and closefrom file actions,
    the setsid flag), else ``None``."""
    import ctypes  # at the first spawn: an idle pty-server pod has not spawned yet

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.gnu_get_libc_version  # noqa: B018 - glibc's flag values are used
        libc.posix_spawn_file_actions_addchdir_np  # noqa: B018
        libc.posix_spawn_file_actions_addclosefrom_np  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_UNSET: Any = object()
_LIBC: ctypes.CDLL | None = _UNSET  # found at the first spawn (see _spawn_libc)


def _spawn_libc() -> ctypes.CDLL | None:
    global _LIBC
    if _LIBC is _UNSET:
        _LIBC = _libc()
    return _LIBC


def _executable(argv0: str, env: Mapping[str, str]) -> str:
    """``argv0`` looked up as ``Popen`` does: on the child's ``PATH`` unless it has a
    ``/``; raises ``FileNotFoundError`` when it is nowhere."""
    if "/" in argv0:
        return argv0
    for folder in os.get_exec_path(dict(env)):
        candidate = os.path.join(folder, argv0)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv0)


def _strings(items: list[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    import ctypes

    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def _posix_spawn(libc: ctypes.CDLL, spec: SpawnSpec, slave: str) -> _Spawned:
    """``spec`` in a new session whose controlling terminal is ``slave`` (its stdin,
    stdout and stderr), started with glibc's ``posix_spawn``. Every signal back to its
    default (also one the server ignores) and none blocked."""
    import ctypes

    path = _executable(spec.argv[0], spec.env)
    if spec.cwd and not os.path.isdir(spec.cwd):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), spec.cwd)
    actions = ctypes.create_string_buffer(_OPAQUE)
    attr = ctypes.create_string_buffer(_OPAQUE)
    sigs = ctypes.create_string_buffer(128)
    libc.posix_spawn_file_actions_init(actions)
    libc.posix_spawnattr_init(attr)
    try:
        # after setsid (the flag acts before the file actions), opening the slave
        # without O_NOCTTY makes it the new session's controlling terminal
        flags = os.O_RDWR | (os.O_NOCTTY if spec.sandboxed else 0)
        libc.posix_spawn_file_actions_addopen(
            actions, 0, os.fsencode(slave), flags, ctypes.c_uint(0)
        )
        libc.posix_spawn_file_actions_adddup2(actions, 0, 1)
        libc.posix_spawn_file_actions_adddup2(actions, 0, 2)
        if spec.cwd:
            libc.posix_spawn_file_actions_addchdir_np(actions, os.fsencode(spec.cwd))
        libc.posix_spawn_file_actions_addclosefrom_np(actions, 3)
        libc.sigemptyset(sigs)
        libc.posix_spawnattr_setsigmask(attr, sigs)
        # every signal back to its default, ignored ones too (glibc's set leaves out
        # its internal ones; SIGKILL/SIGSTOP are refused by the kernel and skipped)
        libc.sigfillset(sigs)
        libc.posix_spawnattr_setsigdefault(attr, sigs)
        libc.posix_spawnattr_setflags(
            attr, ctypes.c_short(_SPAWN_SETSID | _SPAWN_SETSIGMASK | _SPAWN_SETSIGDEF)
        )
        argv = _strings([os.fsencode(a) for a in spec.argv])
        envp = _strings([os.fsencode(k) + b"=" + os.fsencode(v) for k, v in spec.env.items()])
        pid = ctypes.c_int(0)
        failed = libc.posix_spawn(ctypes.byref(pid), os.fsencode(path), actions, attr, argv, envp)
    finally:
        libc.posix_spawn_file_actions_destroy(actions)
        libc.posix_spawnattr_destroy(attr)
    if failed:
        if failed in (errno.ENOENT, errno.ENOTDIR):
            raise FileNotFoundError(failed, os.strerror(failed), path)
        raise OSError(failed, os.strerror(failed), path)
    return _Spawned(pid.value)


_TIOCGSID = getattr(termios, "TIOCGSID", 0x5429)


def _winsize(rows: int, cols: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


_SCAN_MIN_TTL = 0.02


@dataclass(frozen=True)
class _Table:
    """Live (non-zombie) processes by session id, and children by parent."""

    sessions: dict[int, list[int]]
    children: dict[int, list[int]]


_scan_cache: tuple[float, float, _Table] = (0.0, 0.0, _Table({}, {}))


def _scan() -> _Table:
    """Live (non-zombie) processes by session id and by parent, from /proc.

    Shared by every terminating session and reused for a while (at least 20 ms, and at
    least five times as long as the last scan took), so stopping a thousand terminals at
    once costs a few scans of /proc, not a thousand per polling round.
    """
    global _scan_cache
    now = time.monotonic()
    taken_at, took, table = _scan_cache
    if now - taken_at < max(_SCAN_MIN_TTL, 5 * took):
        return table
    table = _Table({}, {})
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
            table.sessions.setdefault(int(fields[3]), []).append(int(entry))
            table.children.setdefault(int(fields[1]), []).append(int(entry))
    done = time.monotonic()
    _scan_cache = (done, done - now, table)
    return table


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    return _scan().sessions.get(sid, [])


def _sandbox_members(sid: int) -> list[int]:
    """A sandbox launcher's session (the launcher, its namespace's init) and everything
    below it: every process of the sandbox's PID namespace, whatever its session."""
    table = _scan()
    found = list(table.sessions.get(sid, []))
    seen = set(found)
    for pid in found:  # grows while it is walked
        for child in table.children.get(pid, []):
            if child not in seen:
                seen.add(child)
                found.append(child)
    return found


def exit_status(returncode: int) -> int:
    """Shell convention: a death by signal N is reported as 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class PtyProcess:
    """One child process on its own PTY; the master fd is non-blocking."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes] | _Spawned,
        master_fd: int,
        *,
        sandboxed: bool = False,
    ) -> None:
        self._popen = popen
        self.master_fd = master_fd
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the child leads its session and group
        self.sandboxed = sandboxed
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
            popen: subprocess.Popen[bytes] | _Spawned
            libc = _spawn_libc()
            if libc is not None:
                popen = _posix_spawn(libc, spec, os.ttyname(slave))
            else:
                popen = subprocess.Popen(
                    list(spec.argv),
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    cwd=spec.cwd or None,
                    env=dict(spec.env),
                    start_new_session=True,
                    preexec_fn=_reset_signals if spec.sandboxed else _take_controlling_tty,
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
        return cls(popen, master, sandboxed=spec.sandboxed)

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

    def read_into(self, buffer: memoryview) -> int | None:
        """Read into ``buffer`` (no bytes object made per read): the count; ``None``
        when nothing is ready; 0 at end of output."""
        try:
            return os.readv(self.master_fd, (buffer,))
        except BlockingIOError:
            return None
        except OSError:  # EIO: every slave fd is closed
            return 0

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

    def _terminal_session(self) -> int | None:
        """The session whose controlling terminal the PTY is (the agent's, inside a
        sandbox); ``None`` when it has none (yet, or any more)."""
        try:
            found = struct.unpack("i", fcntl.ioctl(self.master_fd, _TIOCGSID, b"\0" * 4))[0]
        except OSError:
            return None
        return int(found) if found > 0 else None

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size and tell the foreground process group (``SIGWINCH``)."""
        fcntl.ioctl(self.master_fd, termios.TIOCSWINSZ, _winsize(rows, cols))
        self.signal(signal.SIGWINCH)

    def signal(self, sig: int) -> None:
        """Signal the terminal's foreground process group (where ``^C`` would go) and
        the session leader's group: the agent's, never a sandbox's launcher (its death
        ends the sandbox at once)."""
        if self.sandboxed:
            targets = {self.foreground_pgid(), self._terminal_session()} - {self.pgid, None}
        else:
            targets = {self.foreground_pgid(), self.pgid}
        for target in targets:
            assert target is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(target, sig)

    def _signal_everything(self, sig: int) -> None:
        if self.sandboxed:
            self._signal_sandbox(sig)
            return
        targets = set(_session_members(self.pid))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        if self._popen.returncode is None:
            targets.add(self.pid)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _signal_sandbox(self, sig: int) -> None:
        """Every process of the sandbox; the launcher only with ``SIGKILL`` (``SIGHUP``
        or ``SIGTERM`` would kill it, and its death kills the rest at once with
        ``SIGKILL``: they get their grace first). The namespace's init ignores what
        it has no handler for; killing the launcher kills it, and with it, the kernel
        every process left in the namespace."""
        for pid in _sandbox_members(self.pid):
            if pid == self.pid and sig != signal.SIGKILL:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL and self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)

    def gone(self) -> bool:
        """Main process reaped and nothing left alive in its session (in a sandbox:
        in its PID namespace)."""
        if self.poll() is None:
            return False
        members = [
            pid
            for pid in (_sandbox_members if self.sandboxed else _session_members)(self.pid)
            if pid != self.pid
        ]
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
