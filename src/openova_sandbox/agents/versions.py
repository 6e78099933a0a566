"""What version an agent's binary reports (``<binary> --version``), cached.

The probe runs with stdin closed, a throwaway HOME (an agent must not write its first-run
state into the server's HOME just because someone listed the agents) and a short
timeout, in its own process group so a binary that ignores ``--version`` and starts a
UI is killed with everything it started. Results (also "no version") are cached by the
binary's real path, inode, size and mtime, so a reinstall or upgrade is probed again and
an unchanged binary never is.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping

PROBE_TIMEOUT = 5.0
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

_cache: dict[str, tuple[tuple[int, int, int], str | None]] = {}
_lock = threading.Lock()


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
    if cached is not None and cached[0] == stamp:
        return cached[1]
    version = _run(binary, env or {}, timeout)
    with _lock:
        _cache[real] = (stamp, version)
    return version


def _run(binary: str, env: Mapping[str, str], timeout: float) -> str | None:
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
        except OSError:
            return None
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return None
        finally:
            _kill_group(proc)  # nothing it started outlives the probe
        if proc.returncode != 0:
            return None
        return parse_version(out.decode("utf-8", "replace")[:4096])


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
