"""What version an agent's binary reports (``<binary> --version``), cached.

The probe runs with stdin closed, a throwaway HOME (an agent must not write its first-run
state into the server's HOME just because someone listed the agents) and a short
timeout, in its own process group so a binary that ignores ``--version`` and starts a
UI is killed with everything it started. Definite results (a version, or a binary that
ran and named none) are cached by the binary's real path, inode, size and mtime, so a
reinstall or upgrade is probed again and an unchanged binary never is. A probe that timed
out (a cold start on a busy machine) or could not start says nothing about the binary:
it answers "no version" and is tried again after a back-off (``RETRY_AFTER``, doubling to
``RETRY_MAX``), so one slow first run does not hide the version for good.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping

PROBE_TIMEOUT = 5.0
RETRY_AFTER = 30.0  # seconds after an inconclusive probe before the next one
RETRY_MAX = 600.0
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TRANSIENT = {errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE}

_cache: dict[str, tuple[tuple[int, int, int], str | None]] = {}
# an inconclusive probe's binary: (its stamp, when to try again, the back-off used)
_retry: dict[str, tuple[tuple[int, int, int], float, float]] = {}
_lock = threading.Lock()
_clock: Callable[[], float] = time.monotonic


def parse_version(output: str) -> str | None:
    """The first version-looking token of the first line that has one."""
    for line in _ANSI.sub("", output).splitlines():
        match = _VERSION.search(line)
        if match:
            return match.group(0)
    return None


def _key(path: str) -> tuple[str, tuple[int, int, int]] | None:
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return real, (st.st_ino, st.st_size, st.st_mtime_ns)


def probe_version(
    binary: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str | None:
    """``binary --version`` parsed, or None (not runnable, failed, timed out, no version).

    ``env`` is the environment to run it with (PATH, the row's no-update settings); HOME
    is always a fresh temporary folder, removed afterwards. ``timeout`` defaults to
    ``PROBE_TIMEOUT``, read at each call (a test on a busy machine may raise it).
    """
    if timeout is None:
        timeout = PROBE_TIMEOUT
    key = _key(binary)
    if key is None:
        return None
    real, stamp = key
    with _lock:
        cached = _cache.get(real)
        retry = _retry.get(real)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    if retry is not None and retry[0] == stamp and _clock() < retry[1]:
        return None  # inconclusive a moment ago: not run again before the back-off
    definite, version = _run(binary, env or {}, timeout)
    with _lock:
        if definite:
            _cache[real] = (stamp, version)
            _retry.pop(real, None)
        else:
            backoff = RETRY_AFTER
            if retry is not None and retry[0] == stamp:
                backoff = min(RETRY_MAX, retry[2] * 2)
            _retry[real] = (stamp, _clock() + backoff, backoff)
    return version


def _run(binary: str, env: Mapping[str, str], timeout: float) -> tuple[bool, str | None]:
    """``(definite, version)``: ``definite`` is False when the binary did not get to
    answer (it could not be started, or it timed out)."""
    with tempfile.TemporaryDirectory(prefix="sandbox-version-probe-") as home:
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "LANG": "C.UTF-8",
            **env,
            "HOME": home,
            "TERM": "dumb",
            "NO_COLOR": "1",
            "CI": "1",
        }
        try:
            proc = subprocess.Popen(
                [binary, "--version"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=home,
                start_new_session=True,
            )
        except OSError as exc:  # not executable, bad format: an answer about the binary;
            return exc.errno not in _TRANSIENT, None  # out of processes or fds: not one
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return False, None
        finally:
            _kill_group(proc)  # nothing it started outlives the probe
        if proc.returncode != 0:
            return True, None
        return True, parse_version(out.decode("utf-8", "replace")[:4096])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            proc.communicate(timeout=2)


def forget_versions() -> None:
    """Drop the cache (tests)."""
    with _lock:
        _cache.clear()
        _retry.clear()
