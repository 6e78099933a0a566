"""Installing and removing the agents the server runs, under ``<data-dir>/agents/``.

An install is planned from the catalogue row's package (``npm`` or ``pip``, pinned
version unless the caller names one), built in a new install dir (an npm prefix with
``npm install --prefix``, or a venv with ``python -m venv`` + ``pip install``), checked
(the binary is there), stamped with a manifest, and only then made current by replacing
the ``bin/<binary>`` symlink atomically. Any failure (or a cancel) removes the new dir
and leaves the previous install as it was. The same version already installed is
reported and left alone.

npm agents are installed with ``--prefix`` into their own folder and never with
``-g``; ``npm_config_*`` variables of the caller that could redirect the install
(``prefix``, ``global``, ``location``) are dropped. The agents' own no-update settings
are in their catalogue rows (``env``, HOME config files).

Progress is a stream of lines given to a callback (the CLI prints them, the API keeps
them for the console). Installs of one agent are serialized across processes with a
lock file, so ``sandbox agents install`` and the server's console cannot build the same
agent at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..domain.catalogue import BUILTIN, NPM, SHELL, AgentPackage, AgentSpec, Catalogue
from ..domain.errors import Conflict, Invalid, NotFound, SandboxError
from .paths import MANIFEST, AgentPaths, Manifest, current_install, read_manifest

Progress = Callable[[str], None]

NODE_MIN_MAJOR = 20
INSTALL_TIMEOUT = 1800.0
_VERSION_TEXT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_NPM_REDIRECTS = ("npm_config_prefix", "npm_config_global", "npm_config_location")
NODE_HELP = (
    "install Node.js 20 or newer (e.g. `apt-get install nodejs npm` on Debian 13, or "
    "https://nodejs.org), then run the install again"
)


class AgentNotFound(NotFound):
    code = "agent-not-found"


class NotInstallable(Invalid):
    """The row has no package the server can install; ``detail`` says how by hand."""

    code = "agent-not-installable"


class InstallFailed(SandboxError):
    """The install did not happen (Node missing, registry error, binary missing…);
    nothing of it was left behind."""

    code = "agent-install-failed"


class InstallBusy(Conflict):
    """Another process is installing or removing this agent right now."""

    code = "install-running"


@dataclass(frozen=True)
class InstallPlan:
    slug: str
    binary: str
    package: AgentPackage
    version: str
    pinned: bool  # the catalogue's default version (not one the caller named)

    @property
    def manager(self) -> str:
        return self.package.manager

    @property
    def spec(self) -> str:
        return self.package.spec(self.version)


@dataclass(frozen=True)
class InstallResult:
    slug: str
    version: str
    path: str
    changed: bool  # False: that version was already installed


def parse_target(text: str) -> tuple[str, str | None]:
    """``opencode@1.18.33`` → ``("opencode", "1.18.33")``; ``opencode`` → version None."""
    slug, at, version = text.strip().partition("@")
    if not slug:
        raise Invalid(f"{text!r}: name an agent, e.g. opencode or opencode@1.18.33")
    if at:
        check_version(version)
        return slug, version
    return slug, None


def check_version(version: str) -> str:
    if not _VERSION_TEXT.match(version):
        raise Invalid(
            f"version {version!r} is not a version (letters, digits and . + _ - only, "
            "e.g. 1.18.33)",
            code="invalid-version",
        )
    return version


def package_of(spec: AgentSpec) -> AgentPackage | None:
    """The row's package; an override row of a built-in agent keeps the built-in's
    package when it still names the same binary (it changes how the agent runs, not
    what it is)."""
    if spec.package is not None:
        return spec.package
    builtin = next((b for b in BUILTIN if b.slug == spec.slug), None)
    if builtin is not None and builtin.package is not None and builtin.binary == spec.binary:
        return builtin.package
    return None


def not_installable_reason(spec: AgentSpec) -> str:
    if spec.slug == SHELL:
        return "the Shell runs bash from the server's PATH: there is nothing to install"
    if spec.manual_install:
        return spec.manual_install
    if os.path.isabs(spec.binary):
        return f"{spec.slug} runs {spec.binary}, a path this server does not manage"
    return (
        f"{spec.slug} has no package this server can install: put {spec.binary!r} on the "
        "server's PATH"
    )


def plan_install(catalogue: Catalogue, slug: str, version: str | None = None) -> InstallPlan:
    """What installing ``slug`` (at ``version``) means, or why it cannot be done."""
    spec = catalogue.get(slug)
    if spec is None or not spec.offered_by_api:
        known = ", ".join(catalogue.api_slugs)
        raise AgentNotFound(f"no agent {slug!r} in the catalogue; known agents: {known}")
    package = package_of(spec)
    if package is None or os.path.isabs(spec.binary):
        raise NotInstallable(not_installable_reason(spec))
    if version is not None:
        check_version(version)
    return InstallPlan(
        slug=spec.slug,
        binary=spec.binary,
        package=package,
        version=version or package.version,
        pinned=version is None,
    )


def node_version(path: str) -> tuple[int, str]:
    """The major version and text of the ``node`` on ``path``; raises InstallFailed with
    what to do when node or npm is missing or node is older than 20."""
    node = shutil.which("node", path=path)
    npm = shutil.which("npm", path=path)
    if node is None or npm is None:
        absent = [name for name, found in (("node", node), ("npm", npm)) if found is None]
        verb = "are" if len(absent) > 1 else "is"
        raise InstallFailed(
            f"Node.js is needed for npm agents, but {' and '.join(absent)} {verb} not on the "
            "server's PATH: " + NODE_HELP
        )
    try:
        done = subprocess.run(
            [node, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "PATH": path},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallFailed(f"cannot run {node} --version ({exc}): " + NODE_HELP) from exc
    text = done.stdout.strip()
    match = re.match(r"^v?(\d+)\.\d+", text)
    if done.returncode != 0 or not match:
        raise InstallFailed(f"{node} --version did not answer a version ({text!r}): " + NODE_HELP)
    major = int(match.group(1))
    if major < NODE_MIN_MAJOR:
        raise InstallFailed(
            f"Node.js {text} ({node}) is too old: npm agents need Node.js "
            f"{NODE_MIN_MAJOR} or newer; " + NODE_HELP
        )
    return major, text


class Installer:
    """Installs and removes agents in one data dir. Thread-safe per agent through the
    lock file; ``cancel()`` stops a running install (its process group is killed and
    its dir removed)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        catalogue: Catalogue,
        *,
        path: str | None = None,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = INSTALL_TIMEOUT,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.paths = AgentPaths.of(data_dir)
        self.catalogue = catalogue
        self.path = path if path is not None else os.environ.get("PATH", "")
        self.python = python or sys.executable
        self._env = dict(env) if env is not None else dict(os.environ)
        self.timeout = timeout
        self._cancelled = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_lock = threading.Lock()

    # ------------------------------------------------------------------ public
    def install(
        self, slug: str, version: str | None = None, progress: Progress | None = None
    ) -> InstallResult:
        say = progress or (lambda _line: None)
        plan = plan_install(self.catalogue, slug, version)
        spec = self.catalogue.get(plan.slug)
        assert spec is not None
        if plan.manager == NPM:
            _major, text = node_version(self.path)
            say(f"Node.js {text} found (npm agents need {NODE_MIN_MAJOR} or newer)")
        with self._locked(plan.slug):
            self._sweep(plan.binary, plan.slug)
            current = current_install(self.data_dir, spec)
            if current is not None and self._same(current, plan):
                link = str(self.paths.link(plan.binary))
                say(f"{plan.slug} {current.version} is already installed ({link}); nothing to do")
                return InstallResult(plan.slug, current.version, link, changed=False)
            return self._build(plan, current, say)

    def remove(self, slug: str, progress: Progress | None = None) -> bool:
        """Remove ``slug``'s managed install; False when there was none."""
        say = progress or (lambda _line: None)
        spec = self.catalogue.get(slug)
        if spec is None or not spec.offered_by_api:
            known = ", ".join(self.catalogue.api_slugs)
            raise AgentNotFound(f"no agent {slug!r} in the catalogue; known agents: {known}")
        if os.path.isabs(spec.binary):
            say(f"{slug} is not installed by this server (it runs {spec.binary})")
            return False
        with self._locked(slug):
            current = current_install(self.data_dir, spec)
            if current is not None:
                self.paths.link(spec.binary).unlink(missing_ok=True)
            removed = self._sweep(spec.binary, slug)
        if current is None:
            say(f"{slug} is not installed by this server; nothing to remove")
            return False
        say(f"removed {slug} {current.version}" + (f" ({removed} dirs)" if removed > 1 else ""))
        return True

    def cancel(self) -> None:
        self._cancelled.set()
        with self._proc_lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ building
    @staticmethod
    def _same(current: Manifest, plan: InstallPlan) -> bool:
        return (
            current.package == plan.package.name
            and current.manager == plan.manager
            and current.version == plan.version
        )

    def _build(self, plan: InstallPlan, current: Manifest | None, say: Progress) -> InstallResult:
        parent = self.paths.npm if plan.manager == NPM else self.paths.venvs
        parent.mkdir(parents=True, exist_ok=True)
        self.paths.bin.mkdir(parents=True, exist_ok=True)
        target = parent / f"{plan.slug}-{secrets.token_hex(4)}"
        had = f" (replacing {current.version})" if current else ""
        say(f"Installing {plan.spec} for {plan.slug}{had} into {target}")
        try:
            if plan.manager == NPM:
                entry, version = self._npm(plan, target, say)
            else:
                entry, version = self._pip(plan, target, say)
            manifest = Manifest(
                slug=plan.slug,
                manager=plan.manager,
                package=plan.package.name,
                version=version,
                binary=plan.binary,
                entry=entry,
            )
            (target / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
            self._point_link(plan.binary, target / entry)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        # the new install is current: earlier ones (and debris) go
        self._sweep(plan.binary, plan.slug)
        link = str(self.paths.link(plan.binary))
        say(f"Installed {plan.slug} {version}: {link}")
        return InstallResult(plan.slug, version, link, changed=True)

    def _npm(self, plan: InstallPlan, target: Path, say: Progress) -> tuple[str, str]:
        target.mkdir()
        # the agent's own install script (opencode links its platform binary) is what
        # we chose to install: approve it for npm's allowScripts policy (npm ≥ 11)
        manifest = {
            "name": f"openova-agent-{plan.slug}",
            "private": True,
            "allowScripts": {plan.package.name: True},
        }
        (target / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
        npm = shutil.which("npm", path=self.path)
        assert npm is not None  # node_version checked it
        self._run(
            [
                npm,
                "install",
                "--prefix",
                str(target),
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
                "--color=false",
                plan.spec,
            ],
            say,
            cwd=target,
            what=f"npm install {plan.spec}",
        )
        entry = Path("node_modules") / ".bin" / plan.binary
        if not os.access(target / entry, os.X_OK):
            raise InstallFailed(f"{plan.spec} was installed but has no {plan.binary!r} command")
        version = plan.version
        try:
            meta = json.loads(
                (target / "node_modules" / plan.package.name / "package.json").read_text()
            )
            version = str(meta.get("version") or version)
        except (OSError, ValueError):
            pass
        return str(entry), version

    def _pip(self, plan: InstallPlan, target: Path, say: Progress) -> tuple[str, str]:
        say(f"Creating a venv with {self.python}")
        self._run([self.python, "-m", "venv", str(target)], say, what="python -m venv")
        python = str(target / "bin" / "python")
        self._run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                plan.spec,
            ],
            say,
            what=f"pip install {plan.spec}",
        )
        entry = Path("bin") / plan.binary
        if not os.access(target / entry, os.X_OK):
            raise InstallFailed(f"{plan.spec} was installed but has no {plan.binary!r} command")
        version = plan.version
        probe = subprocess.run(
            [
                python,
                "-c",
                f"import importlib.metadata as m; print(m.version({plan.package.name!r}))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=self._child_env(),
        )
        if probe.returncode == 0 and probe.stdout.strip():
            version = probe.stdout.strip()
        return str(entry), version

    def _child_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in self._env.items()
            if k.lower() not in _NPM_REDIRECTS
            and k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "NODE_OPTIONS")
        }
        env["PATH"] = self.path
        env["npm_config_update_notifier"] = "false"
        env["NO_COLOR"] = "1"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        return env

    def _run(self, argv: list[str], say: Progress, *, what: str, cwd: Path | None = None) -> None:
        """Run one install step, streaming its output lines; raise InstallFailed with
        its last lines when it fails."""
        if self._cancelled.is_set():
            raise InstallFailed("the install was cancelled")
        tail: list[str] = []
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=self._child_env(),
                start_new_session=True,
            )
        except OSError as exc:
            raise InstallFailed(f"{what}: cannot start {argv[0]}: {exc.strerror or exc}") from exc
        with self._proc_lock:
            self._proc = proc
        expired = threading.Event()
        timer = threading.Timer(self.timeout, _expire, args=(proc, expired))
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
                if line.strip():
                    say(line)
                    tail = [*tail[-5:], line]
            code = proc.wait()
        finally:
            timer.cancel()
            with self._proc_lock:
                self._proc = None
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._cancelled.is_set():
            raise InstallFailed(f"{what}: cancelled")
        if code != 0:
            if expired.is_set():
                raise InstallFailed(f"{what}: gave up after {self.timeout:.0f} s")
            why = _reason(tail)
            raise InstallFailed(f"{what} failed (exit {code})" + (f": {why}" if why else ""))

    def _point_link(self, binary: str, entry: Path) -> None:
        """Make ``bin/<binary>`` point at ``entry``, atomically (rename over the link)."""
        link = self.paths.link(binary)
        tmp = link.with_name(f".{binary}.{secrets.token_hex(4)}")
        os.symlink(os.path.relpath(entry, self.paths.bin), tmp)
        try:
            os.replace(tmp, link)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _sweep(self, binary: str, slug: str) -> int:
        """Remove every install dir of ``slug`` that ``bin/<binary>`` does not point to."""
        link = self.paths.link(binary)
        keep = self.paths.current_dir(binary)
        if keep is not None and (not link.exists() or read_manifest(keep) is None):
            link.unlink(missing_ok=True)  # a link into a dir gone or unfinished: debris too
            keep = None
        removed = 0
        for install_dir in self.paths.install_dirs(slug):
            if keep is None or install_dir != keep:
                shutil.rmtree(install_dir, ignore_errors=True)
                removed += 1
        return removed

    @contextlib.contextmanager
    def _locked(self, slug: str) -> Iterator[None]:
        self.paths.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.locks / f"{slug}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InstallBusy(
                    f"{slug} is being installed or removed by another process right now; "
                    "try again when it is done"
                ) from None
            yield
        finally:
            os.close(fd)


def _expire(proc: subprocess.Popen[bytes], expired: threading.Event) -> None:
    expired.set()
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)


def _reason(tail: list[str]) -> str:
    """The most telling of the last output lines (npm says ``npm error …``)."""
    errors = [line for line in tail if re.match(r"^(npm )?(error|ERR!)", line, re.IGNORECASE)]
    picked = errors[:2] or tail[-2:]
    return " / ".join(line.strip() for line in picked)[:600]
