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
"""

from __future__ import annotations

import contextlib
import os
import re
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

    @property
    def controllers(self) -> list[str]:
        return sorted(self.bases)

    def _dir(self, base: Base, key: str) -> Path:
        """``<base>/openova-sandbox-<pid>/<namespace>/<name>`` (a folder per part, so
        no two keys share one)."""
        parts = [_NAME.sub("_", part) or "_" for part in key.split("/")]
        return base.path.joinpath(f"{PREFIX}{os.getpid()}", *parts)

    def prepare(self, key: str, *, memory: int | None, cpu: str) -> list[str]:
        """The sandbox's cgroups, made and limited now (again: the quota may have
        changed); the ``cgroup.procs`` files its launcher joins."""
        procs = []
        quota = cpu_quota_us(cpu)
        for base in self.bases.values():
            if base.controller == "cpu" and not self.limits_cpu(quota):
                continue  # joining costs a migration and would limit nothing
            folder = self._dir(base, key)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                self._limit(base, folder, memory=memory, quota=quota)
            except OSError as exc:
                log.warning("cgroup.unusable", controller=base.controller, error=str(exc))
                continue
            made = self.made.setdefault(key, [])
            if folder not in made:
                made.append(folder)
            procs.append(str(folder / "cgroup.procs"))
        return procs

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
        for folder in self.made.pop(key, []):
            with contextlib.suppress(OSError):
                folder.rmdir()
                if folder.parent.name != f"{PREFIX}{os.getpid()}":
                    folder.parent.rmdir()  # the namespace's, when it was the last

    def close(self) -> None:
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
