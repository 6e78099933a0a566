"""Per-sandbox cgroups where the machine lets this server make them (issue 12).

For each of the ``pids``, ``memory`` and ``cpu`` controllers, :func:`find` looks for a
cgroup this server may create children in: its own cgroup of a cgroup v1 hierarchy, or
of the unified (v2) hierarchy when that cgroup already delegates the controller to its
children (``cgroup.subtree_control``). Each sandbox then gets
``<that cgroup>/openova-sandbox-<server pid>/<namespace>/<name>``, with

- ``pids.max``: the process limit (exact for the whole sandbox, root included, which the
  kernel exempts from ``RLIMIT_NPROC``);
- ``memory.limit_in_bytes`` (v1) or ``memory.max`` (v2): the quota's memory, for every
  process of the sandbox together, ``/tmp`` included (tmpfs pages are charged there);
- ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` (v1) or ``cpu.max`` (v2): the quota's CPU as a
  rate (``2`` cores: 200 ms of CPU time every 100 ms); not joined when the quota is at
  least the machine's cores (it would limit nothing, and each join costs the spawn).

The launcher joins them itself before bubblewrap starts (:func:`enter_argv`: a
``/bin/sh`` writes its own pid to each ``cgroup.procs`` and ``exec``\\ s), so no process
of the sandbox is ever outside them. A controller with no writable cgroup is reported at
start and left out; the per-process rlimits (terminal/isolation.py) still apply.

A join is the slowest step of an isolated start: every move of a process between
cgroups takes the kernel's cgroup threadgroup lock for writing, which first waits for an
RCU grace period (6-14 ms on the 2-vCPU test machine), unless another move took it less
than a grace period ago. :meth:`Cgroups.prime` starts that wait early, from a thread,
when a spawn begins: the thread moves itself to the cgroup it is already in (a move that
changes nothing but takes the lock), so the wait runs while the server prepares the
spawn and the launcher starts, and the launcher's join finds the lock's grace period
already passed (docs/terminal.md, "What isolation costs an agent's start").
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import structlog

from ..domain.quantity import parse_quantity

log = structlog.get_logger(__name__)

CONTROLLERS = ("pids", "memory", "cpu")
ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
_NAME = re.compile(r"[^A-Za-z0-9._-]")
PREFIX = "openova-sandbox-"


@dataclass(frozen=True)
class Base:
    """A cgroup this server may make children in, for ``controller``."""

    controller: str
    path: Path
    v2: bool


def _own_paths(text: str) -> tuple[dict[str, str], str | None]:
    """From ``/proc/self/cgroup``: this process's cgroup per v1 controller, and its
    unified (v2) cgroup (``None`` when there is none)."""
    v1: dict[str, str] = {}
    unified = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, names, path = parts
        if names == "":
            unified = path
        for name in names.split(","):
            if name:
                v1[name] = path
    return v1, unified


def _usable(path: Path) -> bool:
    """Whether a child cgroup can be made (and removed) in ``path``."""
    probe = path / f"{PREFIX}probe-{os.getpid()}"
    try:
        probe.mkdir()
    except FileExistsError:
        pass
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True


def find(root: Path = ROOT, own: str | None = None) -> dict[str, Base]:
    """The writable cgroup of each controller this machine offers this server."""
    if own is None:
        try:
            own = Path("/proc/self/cgroup").read_text()
        except OSError:
            return {}
    v1, unified = _own_paths(own)
    found: dict[str, Base] = {}
    for controller in CONTROLLERS:
        if controller in v1:
            path = root / controller / v1[controller].lstrip("/")
            if (path / "cgroup.procs").is_file() and _usable(path):
                found[controller] = Base(controller, path, v2=False)
    if unified is not None:
        for mount in (root, root / "unified"):
            path = mount / unified.lstrip("/")
            try:
                delegated = (path / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            for controller in CONTROLLERS:
                if controller not in found and controller in delegated and _usable(path):
                    found[controller] = Base(controller, path, v2=True)
            break
    return found


def cpu_quota_us(cpu: str) -> int | None:
    """The quota's CPU (``2``, ``500m``) as microseconds per period; ``None`` if unset."""
    cores = parse_quantity(cpu) if cpu else None
    if cores is None or cores <= 0:
        return None
    return max(1000, int(cores * Decimal(PERIOD_US)))


@dataclass
class Cgroups:
    """This server's per-sandbox cgroups (created at a sandbox's first spawn)."""

    bases: dict[str, Base]
    processes: int
    made: dict[str, list[Path]] = field(default_factory=dict)
    # per sandbox: the limits last written and the cgroup.procs files they were for
    _ready: dict[str, tuple[int | None, int | None, list[str]]] = field(
        default_factory=dict, init=False, repr=False
    )
    # prime(): the file it writes to (opened at its first use, kept), the thread taking
    # the lock now, and off once the machine refused it
    _prime_fd: int | None = field(default=None, init=False, repr=False)
    _primer: threading.Thread | None = field(default=None, init=False, repr=False)
    _prime_off: bool = field(default=False, init=False, repr=False)

    @property
    def controllers(self) -> list[str]:
        return sorted(self.bases)

    def _dir(self, base: Base, key: str) -> Path:
        """``<base>/openova-sandbox-<pid>/<namespace>/<name>`` (a folder per part, so
        no two keys share one)."""
        parts = [_NAME.sub("_", part) or "_" for part in key.split("/")]
        return base.path.joinpath(f"{PREFIX}{os.getpid()}", *parts)

    def prepare(self, key: str, *, memory: int | None, cpu: str) -> list[str]:
        """The sandbox's cgroups, made and limited now (again when the quota changed);
        the ``cgroup.procs`` files its launcher joins."""
        quota = cpu_quota_us(cpu)
        ready = self._ready.get(key)
        if ready is not None and ready[:2] == (memory, quota):
            return list(ready[2])
        procs = []
        whole = True  # every controller's cgroup made: worth remembering
        for base in self.bases.values():
            if base.controller == "cpu" and not self.limits_cpu(quota):
                continue  # joining costs a migration and would limit nothing
            folder = self._dir(base, key)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                self._limit(base, folder, memory=memory, quota=quota)
            except OSError as exc:
                log.warning("cgroup.unusable", controller=base.controller, error=str(exc))
                whole = False
                continue
            made = self.made.setdefault(key, [])
            if folder not in made:
                made.append(folder)
            procs.append(str(folder / "cgroup.procs"))
        if whole:
            self._ready[key] = (memory, quota, procs)
        return list(procs)

    def prime(self) -> threading.Thread | None:
        """Start the kernel's wait for the next cgroup move now, in a thread of its own
        (see the module's doc); the thread, ``None`` when one is still at it or the
        machine refused before. The thread writes its own id to the cgroup it is in
        (``tasks`` on v1, where a thread moves alone; the process's id to
        ``cgroup.procs`` on v2), so it moves nothing: only the lock is taken. The file
        is opened here, once, so that the thread makes a single system call: a thread
        that needs the interpreter's lock back mid-way would wait out the caller's
        Python work (up to the 5 ms switch interval) and start the wait too late. A
        refused open or write (no permission on the server's own cgroup) turns priming
        off; the launcher's join then waits as before."""
        primer = self._primer
        if self._prime_off or not self.bases or (primer is not None and primer.is_alive()):
            return None
        base = next(iter(self.bases.values()))
        if self._prime_fd is None:
            name = "cgroup.procs" if base.v2 else "tasks"
            try:
                self._prime_fd = os.open(base.path / name, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as exc:
                self._primer_refused(base, exc)
                return None
        self._primer = primer = threading.Thread(
            target=self._prime, args=(self._prime_fd, base), name="cgroup-prime", daemon=True
        )
        primer.start()
        return primer

    def _prime(self, fd: int, base: Base) -> None:
        own = os.getpid() if base.v2 else threading.get_native_id()
        try:
            os.write(fd, b"%d" % own)
        except OSError as exc:
            self._primer_refused(base, exc)

    def _primer_refused(self, base: Base, exc: OSError) -> None:
        self._prime_off = True
        log.info("cgroup.prime.unavailable", path=str(base.path), error=str(exc))

    @staticmethod
    def limits_cpu(quota: int | None) -> bool:
        """Whether a CPU quota (µs per period) is below this machine's cores."""
        return quota is not None and quota < (os.cpu_count() or 1) * PERIOD_US

    def _limit(self, base: Base, folder: Path, *, memory: int | None, quota: int | None) -> None:
        if base.controller == "pids":
            (folder / "pids.max").write_text(str(self.processes))
        elif base.controller == "memory" and memory is not None:
            name = "memory.max" if base.v2 else "memory.limit_in_bytes"
            (folder / name).write_text(str(memory))
        elif base.controller == "cpu":
            if base.v2:
                (folder / "cpu.max").write_text(f"{quota or 'max'} {PERIOD_US}")
            else:
                (folder / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (folder / "cpu.cfs_quota_us").write_text(str(quota or -1))

    def remove(self, key: str) -> None:
        """Remove the sandbox's cgroups (its processes are gone: empty ones only)."""
        self._ready.pop(key, None)
        for folder in self.made.pop(key, []):
            with contextlib.suppress(OSError):
                folder.rmdir()
                if folder.parent.name != f"{PREFIX}{os.getpid()}":
                    folder.parent.rmdir()  # the namespace's, when it was the last

    def close(self) -> None:
        primer, fd = self._primer, self._prime_fd
        if primer is not None:
            primer.join(5)  # (a grace period or two) before its file is closed
        if fd is not None and not (primer is not None and primer.is_alive()):
            self._prime_fd = None
            os.close(fd)
        for key in list(self.made):
            self.remove(key)
        for base in self.bases.values():
            with contextlib.suppress(OSError):
                (base.path / f"{PREFIX}{os.getpid()}").rmdir()

    def sweep(self) -> None:
        """Remove the empty cgroups earlier servers left (their sandboxes died with
        them); never those of a server still running (several may share a machine)."""
        for base in self.bases.values():
            for folder in base.path.glob(f"{PREFIX}*"):
                owner = folder.name.removeprefix(PREFIX)
                if not owner.isdigit() or os.path.exists(f"/proc/{owner}"):
                    continue
                for child in sorted(folder.glob("**/"), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        child.rmdir()


def enter_argv(procs: Sequence[str]) -> list[str]:
    """A prefix that joins the ``cgroup.procs`` files, then ``exec``\\ s the rest of
    the argv (fails, and so starts nothing, when it cannot join one)."""
    if not procs:
        return []
    script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "sh", *procs, "--"]
