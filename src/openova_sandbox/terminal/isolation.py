"""Embedded isolation (issue 12): each sandbox's processes in a view of their own.

Every terminal process of a sandbox is started by bubblewrap (``bwrap``) in new user,
PID, IPC and UTS namespaces (and a network namespace for an offline org), so it sees:

- the system read-only: ``/usr``, ``/etc``, ``/opt`` and the ``/bin``-style links, the
  directories on the server's ``PATH`` (binaries) and the operator's extra paths
  (``SANDBOX_ISOLATION_PATHS``); everything else of ``/`` is simply not there;
- its own workspace and HOME read-write, at the same paths as outside (so ``HOME``,
  ``PWD`` and the agents' config files need no translation);
- the managed agent installs (``<data dir>/agents``) read-only, and the prefix of the
  Python a managed venv was made with;
- its own ``/tmp`` and ``/dev/shm`` (tmpfs, each at most half its memory quota), its own
  ``/proc`` (only its own processes: the server's are not there to read or signal), and
  a minimal ``/dev`` (null, zero, full, random, urandom, tty, its own ``devpts``);
- never the data dir (signing keys, cookie secret, database, vault), another sandbox's
  workspace or HOME, the server's HOME, nor the files the operator named as secret.

The root is read-only (``--remount-ro /``): writing anywhere but the workspace, HOME,
``/tmp`` and ``/dev/shm`` fails with ``EROFS``. Capabilities are dropped and no further
user namespace can be made inside (``--disable-userns``), so nothing can be unmounted to
look underneath. ``--die-with-parent``: when the server dies, so do its sandboxes.

The terminal: the launcher is started without a controlling terminal (``SpawnSpec
.sandboxed``); inside, ``setsid --ctty`` makes the agent the leader of a new session whose
controlling terminal is the PTY, so job control, ``^C`` and ``SIGWINCH`` work as without
isolation, and a ``^C`` never reaches the launcher (whose death would end the sandbox).

Limits (``prlimit`` inside the user namespace): ``RLIMIT_NPROC`` (counted per user
namespace since Linux 5.14, so per sandbox, except for a server running as root, which
the kernel exempts: a pids cgroup is needed there) and ``RLIMIT_DATA`` (the memory quota,
per process: writable private memory, not the address space that runtimes reserve).

:func:`bwrap_argv` is pure: it turns a :class:`Policy` (the server's, found once at start
by :func:`probe`) and a :class:`View` (one sandbox's) into the launcher's argv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..domain.errors import SpawnFailed
from ..domain.quantity import parse_quantity
from .cgroups import Cgroups, enter_argv
from .pty import SpawnSpec

BWRAP = "bwrap"
NONE = "none"
# top-level system directories shown read-only (a symlink, as /bin on merged-/usr
# systems, is recreated as the same symlink)
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# files only root may read that a sandbox of a server running as root would read too
# (inside, the server's uid owns what root owns): masked when the server is root
ROOT_SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
ROOT_SECRET_DIRS = ("/etc/ssh", "/etc/ssl/private")
DEFAULT_PROCESSES = 1024
TMP = "/tmp"  # noqa: S108 - the sandbox's own tmpfs, not the server's
TMP_VARS = ("TMPDIR", "TMP", "TEMP", "TEMPDIR")
SHM = "/dev/shm"  # noqa: S108 - the same


@dataclass(frozen=True)
class Policy:
    """What every sandbox of this server gets; built by :func:`probe` (absolute, real
    paths; the system entries as found on this machine)."""

    bwrap: str
    prlimit: str
    setsid: str
    # (path, symlink target or "") for each system directory that exists
    system: tuple[tuple[str, str], ...]
    # read-only: the server's PATH directories and the operator's extra paths
    extra: tuple[str, ...] = ()
    agents_dir: str = ""
    # where that folder really is, when it is a link to elsewhere (shown at both paths)
    agents_real: str = ""
    # never visible: masked with an empty tmpfs where a visible path holds them
    hidden: tuple[str, ...] = ()
    # files masked with an empty file (secrets the operator's settings name, root's)
    masked_files: tuple[str, ...] = ()
    masked_dirs: tuple[str, ...] = ()
    processes: int = DEFAULT_PROCESSES
    offline_orgs: frozenset[str] = frozenset()
    network: bool = True


@dataclass(frozen=True)
class View:
    """One sandbox's part: its folders, its name, its memory quota (bytes; None: no
    limit), whether it has the network, and more read-only paths (a venv's Python)."""

    workspace: str
    home: str = ""
    hostname: str = "sandbox"
    memory: int | None = None
    network: bool = True
    readonly: tuple[str, ...] = field(default=())
    # the ``cgroup.procs`` files the launcher joins first (terminal/cgroups.py)
    cgroups: tuple[str, ...] = field(default=())
    # a HOME of its own for a sandbox without one (its HOME variable names a folder
    # not in the view): an empty tmpfs there, gone with the terminal
    scratch_home: str = ""


def inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def visible(path: str, policy: Policy, view: View) -> bool:
    """Whether the server's ``path`` (absolute, normalised) is there, the same, in the
    sandbox's view: under a system directory or a read-only path, the workspace or HOME,
    and not under anything hidden (the agents' folder excepted). ``/tmp`` is not: the
    sandbox's own is another, empty one."""
    roots = [
        *(p for p, _ in policy.system),
        *policy.extra,
        *view.readonly,
        view.workspace,
        *([view.home] if view.home else []),
        *(p for p in (policy.agents_dir, policy.agents_real) if p),
    ]
    if not any(inside(path, r) for r in roots):
        return False
    for secret in policy.hidden:
        if inside(path, secret) and not any(
            inside(path, r) and inside(r, secret)
            for r in (
                view.workspace,
                view.home,
                policy.agents_dir,
                policy.agents_real,
                *policy.extra,
                *view.readonly,
            )
            if r
        ):
            return False
    return True


def bwrap_argv(
    policy: Policy, view: View, argv: Sequence[str], cwd: str, *, terminal: bool = True
) -> list[str]:
    """The launcher's argv: ``argv`` run in ``view``, starting in ``cwd``; ``terminal``:
    as the leader of a session whose controlling terminal is its stdin."""
    out = [
        *enter_argv(view.cgroups),
        policy.bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--cap-drop",
        "ALL",  # bwrap started by root would keep root's capabilities inside
        "--die-with-parent",
        "--hostname",
        view.hostname,
    ]
    if not (policy.network and view.network):
        out.append("--unshare-net")  # loopback only
    shown: list[str] = []
    for path, target in policy.system:
        if target:
            out += ["--symlink", target, path]
        else:
            out += ["--ro-bind", path, path]
            shown.append(path)
    # a secret below a system directory (a data dir under /opt…) is covered first
    for secret in policy.hidden:
        if any(inside(secret, s) for s in shown):
            out += ["--tmpfs", secret]
    for path in policy.masked_files:
        out += ["--ro-bind-try", "/dev/null", path]
    for path in policy.masked_dirs:
        if any(inside(path, s) for s in shown):
            out += ["--tmpfs", path]
    # /tmp and /dev/shm are memory: half the quota each at most, so filling them is
    # refused (ENOSPC) before the sandbox as a whole runs out
    size = [] if view.memory is None else ["--size", str(max(view.memory // 2, 1 << 20))]
    out += ["--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", SHM, "--remount-ro", "/dev"]
    out += [*size, "--tmpfs", TMP]
    if view.scratch_home:
        out += [*size, "--tmpfs", view.scratch_home]
    for path in (*policy.extra, *view.readonly):
        if not any(inside(path, s) for s in shown):
            out += ["--ro-bind-try", path, path]
    if policy.agents_dir:
        real = policy.agents_real or policy.agents_dir
        out += ["--ro-bind-try", real, policy.agents_dir]
        if real != policy.agents_dir:
            out += ["--ro-bind-try", real, real]
    out += ["--bind", view.workspace, view.workspace]
    if view.home and view.home != view.workspace:
        out += ["--bind", view.home, view.home]
    out += ["--remount-ro", "/", "--chdir", cwd or view.workspace, "--"]
    limits = [f"--nproc={policy.processes}"]
    if view.memory is not None:
        limits.append(f"--data={view.memory}")
    out += [policy.prlimit, *limits, "--"]
    if terminal:
        out += [policy.setsid, "--wait", "--ctty", "--"]
    return [*out, *argv]


# ------------------------------------------------------------------ the server's side
@dataclass(frozen=True)
class Probe:
    """What :func:`probe` found: a policy, or why there is none."""

    policy: Policy | None
    reason: str = ""
    took_ms: float = 0.0


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def system_entries(candidates: Iterable[str] = SYSTEM_DIRS) -> tuple[tuple[str, str], ...]:
    found = []
    for path in candidates:
        if os.path.islink(path):
            found.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            found.append((path, ""))
    return tuple(found)


def exposable(path: str, hidden: Sequence[str]) -> bool:
    """A read-only path may be shown unless it is a hidden path, holds one, or lies in
    one (a ``PATH`` entry below the server's HOME, ``~/.local/bin``, may: binaries)."""
    return not any(inside(secret, path) for secret in hidden)


def path_dirs(path_env: str, hidden: Sequence[str]) -> tuple[str, ...]:
    """The directories of ``path_env`` that exist, are not in a system directory
    already, and are neither in a hidden path (the server's HOME: its ``~/.local/bin``
    or version-manager shims need more of that HOME than their folder) nor hold one."""
    found: list[str] = []
    for entry in path_env.split(os.pathsep):
        if not entry or not os.path.isabs(entry):
            continue  # "" and relative entries name the server's working folder
        real = _real(entry)
        if not os.path.isdir(real) or real in found:
            continue
        if any(inside(real, root) for root in SYSTEM_DIRS):
            continue
        if not any(inside(real, secret) or inside(secret, real) for secret in hidden):
            found.append(real)
    return tuple(found)


def probe(
    *,
    data_dir: str,
    path_env: str,
    extra_paths: Sequence[str] = (),
    secret_files: Sequence[str] = (),
    processes: int = DEFAULT_PROCESSES,
    offline_orgs: Iterable[str] = (),
    network: bool = True,
    server_home: str | None = None,
) -> Probe:
    """Find bubblewrap and its helpers and start one empty sandbox to prove the kernel
    allows it; the policy for this server, or the reason there is none."""
    started = time.monotonic()
    tools = {name: shutil.which(name) for name in ("bwrap", "prlimit", "setsid")}
    missing = [name for name, where in tools.items() if where is None]
    if missing:
        names = ", ".join(missing)
        return Probe(None, f"{names} not found (install bubblewrap and util-linux)")
    data = _real(data_dir)
    home = _real(server_home if server_home is not None else os.path.expanduser("~"))
    hidden = tuple(dict.fromkeys(p for p in (data, home) if p != "/"))
    extra = [*path_dirs(path_env, hidden)]
    # the Python this server runs, and makes managed venvs with (read-only): Python
    # agents and the scripts of a sandbox run with it
    for prefix in (sys.base_prefix, sys.prefix):
        real = _real(prefix)
        if os.path.isdir(real) and exposable(real, hidden) and real not in extra:
            extra.append(real)
    for entry in extra_paths:
        real = _real(entry)
        if os.path.exists(real) and exposable(real, hidden) and real not in extra:
            extra.append(real)
    # a resolver file linked elsewhere (systemd-resolved: /run/…) is shown too
    resolv = _real("/etc/resolv.conf")
    if os.path.isfile(resolv) and not any(inside(resolv, s) for s in SYSTEM_DIRS):
        extra.append(resolv)
    is_root = os.geteuid() == 0
    masked = [_real(f) for f in secret_files if f]
    if is_root:
        masked += [f for f in ROOT_SECRETS if os.path.exists(f)]
    policy = Policy(
        bwrap=str(tools["bwrap"]),
        prlimit=str(tools["prlimit"]),
        setsid=str(tools["setsid"]),
        system=system_entries(),
        extra=tuple(extra),
        agents_dir=os.path.join(data, "agents"),
        agents_real=_real(os.path.join(data, "agents")),
        hidden=hidden,
        masked_files=tuple(f for f in dict.fromkeys(masked) if os.path.isfile(f)),
        masked_dirs=tuple(d for d in ROOT_SECRET_DIRS if is_root and os.path.isdir(d)),
        processes=processes,
        offline_orgs=frozenset(offline_orgs),
        network=network,
    )
    check = bwrap_argv(policy, View(workspace=TMP), ["/bin/true"], "/", terminal=False)
    try:
        done = subprocess.run(check, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return Probe(None, f"bubblewrap cannot start: {exc}")
    took = (time.monotonic() - started) * 1000
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        return Probe(None, f"bubblewrap cannot start a sandbox: {said[-1] if said else ''}")
    return Probe(policy, took_ms=took)


def venv_prefix(binary: str, agents_dir: str) -> str | None:
    """For a binary of a managed venv, the prefix of the Python the venv was made with
    (its scripts run that interpreter, which may live outside every shown path)."""
    real = os.path.realpath(binary)
    venvs = os.path.join(agents_dir, "venvs")
    if not inside(real, venvs):
        return None
    parts = Path(real).relative_to(venvs).parts
    if not parts:
        return None
    try:
        text = (Path(venvs) / parts[0] / "pyvenv.cfg").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            return str(Path(_real(value.strip())).parent)
    return None


def _check_program(program: str, policy: Policy, view: View) -> None:
    """What ``exec`` inside would find wrong, said now as a spawn failure (as a spawn
    without isolation reports it), not as an exit code 1 from inside: a program, or its
    script's interpreter, missing or not in the view."""
    if not os.path.isabs(program):
        return
    for path in (program, os.path.realpath(program)):
        if not visible(path, policy, view):
            raise SpawnFailed(
                f"cannot start {program!r}: it is not inside the sandbox's view (the "
                "system folders, the server's PATH outside its HOME, the managed agents, "
                "SANDBOX_ISOLATION_PATHS): install it there or add its folder to "
                "SANDBOX_ISOLATION_PATHS"
            )
    try:
        with open(program, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return  # exec says why (not readable is not unexecutable)
    if not head.startswith(b"#!"):
        return
    words = head[2:].split(b"\n", 1)[0].split()
    interpreter = os.fsdecode(words[0]) if words else ""
    if interpreter.startswith("/") and not (
        os.path.exists(interpreter) and visible(os.path.realpath(interpreter), policy, view)
    ):
        raise SpawnFailed(
            f"cannot start {program!r}: its interpreter {interpreter} is not found"
            + ("" if not os.path.exists(interpreter) else " inside the sandbox's view")
        )


def memory_bytes(quantity: str) -> int | None:
    """A memory quota (``8Gi``) in bytes; ``None`` when empty or unreadable."""
    value = parse_quantity(quantity) if quantity else None
    return int(value) if value is not None and value >= 1 else None


def wrap(
    policy: Policy,
    spec: SpawnSpec,
    *,
    workspace: str,
    home: str = "",
    name: str = "sandbox",
    memory: str = "",
    cpu: str = "",
    org: str = "",
    cgroups: Cgroups | None = None,
) -> SpawnSpec:
    """``spec`` started in its sandbox's view, in the sandbox's cgroups when there are
    (made now). Raises :class:`SpawnFailed` when the working directory is not in that
    view."""
    agents = policy.agents_real or policy.agents_dir
    readonly = venv_prefix(spec.argv[0], agents) if agents else None
    limit = memory_bytes(memory)
    joined = cgroups.prepare(name, memory=limit, cpu=cpu) if cgroups is not None else []
    view = View(
        workspace=os.path.abspath(workspace),
        home=os.path.abspath(home) if home else "",
        hostname=(name.rsplit("/", 1)[-1] or "sandbox")[:63],
        memory=limit,
        network=org not in policy.offline_orgs,
        readonly=(readonly,) if readonly else (),
        cgroups=tuple(joined),
    )
    home_env = spec.env.get("HOME", "")
    if not view.home and os.path.isabs(home_env) and not visible(home_env, policy, view):
        view = replace(view, scratch_home=os.path.normpath(home_env))
    cwd = os.path.abspath(spec.cwd or view.workspace)
    if not visible(cwd, policy, view):
        raise SpawnFailed(f"working directory {spec.cwd!r} is not inside the sandbox")
    _check_program(spec.argv[0], policy, view)
    argv = bwrap_argv(policy, view, spec.argv, cwd)
    env = spec.env
    outside = [
        k
        for k in TMP_VARS
        if k in env
        and env[k] != TMP
        and not (os.path.isabs(env[k]) and visible(os.path.normpath(env[k]), policy, view))
    ]
    if outside:
        # a temporary folder outside the view (the sandbox's own, in the data dir) is
        # not there: inside, the view's own /tmp is (a tmpfs, gone with the terminal)
        env = {**env, **dict.fromkeys(outside, TMP)}
    return SpawnSpec(
        argv=tuple(argv),
        cwd=cwd,
        env=env,
        rows=spec.rows,
        cols=spec.cols,
        sandboxed=True,
    )
