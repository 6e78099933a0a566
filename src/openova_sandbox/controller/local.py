"""The embedded runtime: what a plan's actions mean on one machine.

A sandbox's workspace is a folder ``<data_dir>/workspaces/<namespace>/<name>`` (mode
0700: the server's user owns every workspace, other local users see none), its HOME is
``<data_dir>/homes/<namespace>/<name>`` (0700 too; made with the workspace, seeded with
the agent's config before each start, removed with the workspace), its temporary folder
``<data_dir>/tmp/<namespace>/<name>`` (``TMPDIR``, ``TMP``, ``TEMP``, ``TEMPDIR`` of its
terminals without isolation; counted in its storage, removed with it), its repos are
``git clone``\\ s inside it, and its terminals live in the in-process terminal server,
reached through :class:`~.ports.TerminalHost`.

Decisions:
- git runs as a real subprocess (``asyncio``), non-interactive (no terminal prompt, no
  askpass, stdin closed, batch-mode ssh), in its own process group so a timeout or a
  cancellation kills the whole tree (git forks remote helpers).
- A clone goes into a hidden sibling ``.clone-<repo>-<random>`` and is renamed into place
  only when git succeeded, so ``<repo>/.git`` existing means "cloned" and a crash never
  leaves a half repository where a finished one is expected. Leftovers of an interrupted
  attempt are removed before the next one.
- A failed clone is remembered for the sandbox's current generation only: the reconciler
  turns it into ``Failed``/``CloneFailed``; a spec change (new generation) tries again.
  A filesystem error (``OSError``) during a clone counts as such a failure.
- Every message that leaves this module is scrubbed of credentials: the configured git
  base URL may carry a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import structlog

from ..domain.errors import Invalid
from ..domain.model import Sandbox
from ..domain.naming import repo_name
from .ports import TerminalHost
from .reconcile import (
    CloneRepo,
    EnsureWorkspace,
    Observed,
    RemoveWorkspace,
    StopTerminals,
    safe_component,
    unique_repos,
)
from .scrub import clean_message, scrub_credentials

log = structlog.get_logger(__name__)

RuntimeAction = EnsureWorkspace | CloneRepo | StopTerminals | RemoveWorkspace
Key = tuple[str, str]

WORKSPACE_MODE = 0o700
STORAGE_SECONDS = 60.0  # how often `sandbox serve` measures a workspace's size again
PARTIAL_PREFIX = ".clone-"
DEFAULT_CLONE_TIMEOUT = 300.0


def workspace_path(data_dir: Path, namespace: str, name: str) -> Path:
    """``<data_dir>/workspaces/<namespace>/<name>``; refuses names that would escape it."""
    for value in (namespace, name):
        if not safe_component(value):
            raise Invalid(f"{value!r} cannot name a workspace folder", code="invalid-name")
    return data_dir / "workspaces" / namespace / name


# Agents unpack into the temporary folder at every start and never clean up (opencode:
# ~13 MB of .so a start): each sandbox gets its own, which goes with it. Inside a
# bubblewrap view these name the view's own /tmp instead (terminal/isolation.py).
TMP_VARS = ("TMPDIR", "TMP", "TEMP", "TEMPDIR")


def tmp_path(data_dir: Path, namespace: str, name: str) -> Path:
    """``<data_dir>/tmp/<namespace>/<name>``: the sandbox's temporary folder."""
    workspace_path(data_dir, namespace, name)  # the same naming rules
    return data_dir / "tmp" / namespace / name


def tmp_env(folder: str) -> dict[str, str]:
    """The variables that point a process's temporary files at ``folder``."""
    return dict.fromkeys(TMP_VARS, folder)


def home_path(data_dir: Path, namespace: str, name: str) -> Path:
    """``<data_dir>/homes/<namespace>/<name>``: the sandbox's own HOME, beside its
    workspace; refuses names that would escape it."""
    workspace_path(data_dir, namespace, name)  # the same naming rules
    return data_dir / "homes" / namespace / name


def clone_url(base_url: str, repo: str) -> str:
    return f"{base_url.rstrip('/')}/{repo}.git"


def without_userinfo(url: str) -> str:
    """``https://bot:token@host/x.git`` → ``https://host/x.git``: what a clone may keep
    as its origin. The base URL's credential is the server's, not the sandbox user's."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _remove_tree(path: Path) -> None:
    """``rm -rf`` that also takes folders an agent left without write permission."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return

    def retry(_function: object, failed: str, _excinfo: object) -> None:
        os.chmod(os.path.dirname(failed), 0o700)
        if os.path.isdir(failed) and not os.path.islink(failed):
            os.chmod(failed, 0o700)
            shutil.rmtree(failed)
        else:
            os.unlink(failed)

    shutil.rmtree(path, onerror=retry)


def disk_usage(root: str) -> int | None:
    """Bytes ``root`` takes on disk (allocated blocks, each inode once, symlinks not
    followed; what cannot be read counts as nothing); ``None`` when it is no folder."""
    if not os.path.isdir(root):
        return None
    total, seen, stack = 0, set(), [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total


@dataclass(frozen=True)
class _CloneError:
    generation: int
    message: str


class LocalRuntime:
    """Observes and changes one machine's workspaces; holds no sandbox state but errors."""

    def __init__(
        self,
        terminals: TerminalHost,
        *,
        data_dir: Path,
        git_base_url: str,
        clone_timeout: float = DEFAULT_CLONE_TIMEOUT,
        max_concurrent_clones: int = 4,
        git_binary: str = "git",
        storage_interval: float | None = None,
    ) -> None:
        self._terminals = terminals
        self._data_dir = data_dir.absolute()  # git and terminals must not depend on the cwd
        self._git_base_url = git_base_url
        self._clone_timeout = clone_timeout
        self._git = git_binary
        self._clone_slots = asyncio.Semaphore(max_concurrent_clones)
        self._clone_errors: dict[Key, dict[str, _CloneError]] = {}
        self._folders: dict[Key, str] = {}  # workspace folders by sandbox, as text
        # the workspaces' sizes on disk (issue 12): (measured at, bytes) by sandbox,
        # measured in a thread at most every STORAGE_SECONDS, one workspace at a time
        self._usage: dict[Key, tuple[float, int]] = {}
        self._measuring: dict[Key, asyncio.Task[None]] = {}
        self._meter = asyncio.Semaphore(1)
        # None: workspaces are not measured (status.storageUsed stays as it is)
        self._storage_interval = storage_interval
        self._ensure_tmp_folders()

    def _ensure_tmp_folders(self) -> None:
        """Every existing workspace's temporary folder (sandboxes made before there
        were any): terminals are told to write there."""
        root = self._data_dir / "workspaces"
        with contextlib.suppress(OSError):
            for ns in os.scandir(root):
                if ns.is_dir(follow_symlinks=False) and safe_component(ns.name):
                    for ws in os.scandir(ns.path):
                        if ws.is_dir(follow_symlinks=False) and safe_component(ws.name):
                            self._make_folders((tmp_path(self._data_dir, ns.name, ws.name),))

    # ----------------------------------------------------------------- observation

    def workspace(self, namespace: str, name: str) -> Path:
        return workspace_path(self._data_dir, namespace, name)

    def _workspace_text(self, key: Key) -> str | None:
        """The workspace folder as text (``None``: the names cannot be folders); kept per
        sandbox, since the sweep observes every sandbox every few seconds."""
        text = self._folders.get(key)
        if text is None:
            if not (safe_component(key[0]) and safe_component(key[1])):
                return None
            text = self._folders[key] = str(self.workspace(*key))
        return text

    def observe(self, sandbox: Sandbox) -> Observed:
        ns, name = sandbox.key
        terminals = self._observe_terminals(ns, name)
        ws = self._workspace_text((ns, name))
        if ws is None:
            return terminals
        generation = sandbox.metadata.generation
        cloned: set[str] = set()
        for repo in unique_repos(sandbox):
            folder = repo_name(repo) if "/" in repo else ""
            if safe_component(folder) and os.path.exists(f"{ws}/{folder}/.git"):
                cloned.add(repo)
        errors = {
            repo: err.message
            for repo, err in self._clone_errors.get((ns, name), {}).items()
            if err.generation == generation
        }
        exists = os.path.isdir(ws)
        return Observed(
            workspace_exists=exists,
            cloned=frozenset(cloned),
            clone_errors=errors,
            terminal_serving=terminals.terminal_serving,
            sessions=terminals.sessions,
            last_activity=terminals.last_activity,
            agent_error=self._terminals.agent_problem(sandbox) or "",
            storage_used=self._storage_used((ns, name), ws) if exists else None,
            mcp=self._terminals.mcp_state(sandbox),
        )

    def _storage_used(self, key: Key, ws: str) -> int | None:
        """The workspace's last measured size; a new measurement is started when that
        one is older than the interval (the sweep sees it when it is done)."""
        if self._storage_interval is None:
            return None
        found = self._usage.get(key)
        stale = found is None or time.monotonic() - found[0] >= self._storage_interval
        if stale and key not in self._measuring:
            with contextlib.suppress(RuntimeError):  # no running loop: not measured
                task = asyncio.get_running_loop().create_task(self._measure(key, ws))
                self._measuring[key] = task
        return found[1] if found is not None else None

    async def _measure(self, key: Key, ws: str) -> None:
        tmp = str(tmp_path(self._data_dir, *key))
        try:
            async with self._meter:
                size = await asyncio.to_thread(disk_usage, ws)
                if size is not None:  # the temporary folder counts too
                    in_tmp = await asyncio.to_thread(disk_usage, tmp)
                    size += in_tmp or 0
            if size is not None:  # None: the workspace went meanwhile
                self._usage[key] = (time.monotonic(), size)
        except Exception:  # a measurement never takes the controller down
            log.exception("controller.storage.unmeasured", sandbox=f"{key[0]}/{key[1]}")
        finally:
            self._measuring.pop(key, None)

    def observe_orphan(self, namespace: str, name: str) -> Observed:
        """For a sandbox gone from the store: only its folder and its terminals matter."""
        terminals = self._observe_terminals(namespace, name)
        if not (safe_component(namespace) and safe_component(name)):
            return terminals
        exists = self.workspace(namespace, name).is_dir()
        return Observed(
            workspace_exists=exists,
            terminal_serving=terminals.terminal_serving,
            sessions=terminals.sessions,
            last_activity=terminals.last_activity,
        )

    def _observe_terminals(self, namespace: str, name: str) -> Observed:
        return Observed(
            terminal_serving=self._terminals.serving(),
            sessions=self._terminals.sessions(namespace, name),
            last_activity=self._terminals.last_activity(namespace, name),
        )

    def sessions(self, namespace: str, name: str) -> int:
        """Live terminals of the sandbox now."""
        return self._terminals.sessions(namespace, name)

    def sandboxes_with_terminals(self) -> list[Key]:
        return self._terminals.sandboxes()

    def forget(self, namespace: str, name: str) -> None:
        self._clone_errors.pop((namespace, name), None)
        self._folders.pop((namespace, name), None)

    # ----------------------------------------------------------------- actions

    async def execute(self, sandbox: Sandbox, action: RuntimeAction) -> bool:
        """Carry out one action; ``False`` when it failed in a way observation reports."""
        ns, name = sandbox.key
        match action:
            case EnsureWorkspace():
                await asyncio.to_thread(self._make_workspace, ns, name)
                return True
            case CloneRepo(repo=repo):
                return await self.clone(sandbox, repo)
            case StopTerminals():
                await self.stop_terminals(ns, name)
                return True
            case RemoveWorkspace():
                await self.remove_workspace(ns, name)
                return True

    def _make_workspace(self, namespace: str, name: str) -> None:
        ws = self.workspace(namespace, name)
        home = home_path(self._data_dir, namespace, name)
        tmp = tmp_path(self._data_dir, namespace, name)
        self._make_folders((ws, home, tmp))
        if not ws.is_dir():
            raise NotADirectoryError(f"workspace {ws} exists and is not a folder")
        log.info("controller.workspace.created", namespace=namespace, sandbox=name, path=str(ws))

    @staticmethod
    def _make_folders(folders: tuple[Path, ...]) -> None:
        """Each folder with its two parents (namespace, kind), all 0700."""
        for leaf in folders:
            for folder in (leaf.parent.parent, leaf.parent, leaf):
                try:
                    folder.mkdir(mode=WORKSPACE_MODE, parents=True)
                except FileExistsError:
                    continue
                folder.chmod(WORKSPACE_MODE)  # mkdir's mode is filtered by the umask

    async def stop_terminals(self, namespace: str, name: str) -> None:
        await self._terminals.stop_sandbox(namespace, name)
        log.info("controller.terminals.stopped", namespace=namespace, sandbox=name)

    async def remove_workspace(self, namespace: str, name: str) -> None:
        """The workspace, the sandbox's HOME (its agents' state and history) and its
        temporary folder go."""
        self._usage.pop((namespace, name), None)
        ws = self.workspace(namespace, name)
        if ws.exists():
            await asyncio.to_thread(shutil.rmtree, ws)
            log.info("controller.workspace.removed", namespace=namespace, sandbox=name)
        home = home_path(self._data_dir, namespace, name)
        if home.exists() or home.is_symlink():
            await asyncio.to_thread(_remove_tree, home)
            log.info("controller.home.removed", namespace=namespace, sandbox=name)
        tmp = tmp_path(self._data_dir, namespace, name)
        if tmp.exists() or tmp.is_symlink():
            await asyncio.to_thread(_remove_tree, tmp)
            log.info("controller.tmp.removed", namespace=namespace, sandbox=name)
        for folder in (ws.parent, home.parent, tmp.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()  # the namespace folder, when this was its last sandbox
        self.forget(namespace, name)

    async def clone(self, sandbox: Sandbox, repo: str) -> bool:
        """Clone ``repo``; a filesystem error (a name the filesystem refuses, no space, a
        folder it cannot move into place) fails the clone for this generation like a git
        error does, instead of being retried on every pass (issue 11)."""
        try:
            return await self._clone(sandbox, repo)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            return self._fail(sandbox, repo, f"the filesystem refused the clone: {reason}")

    async def _clone(self, sandbox: Sandbox, repo: str) -> bool:
        ns, name = sandbox.key
        ws = self.workspace(ns, name)
        folder = repo_name(repo)
        dest = ws / folder
        if (dest / ".git").exists():
            return True
        if not self._git_base_url:
            return self._fail(sandbox, repo, "no git base URL is configured (SANDBOX_GIT_BASE_URL)")
        async with self._clone_slots:
            await asyncio.to_thread(self._remove_partials, ws, folder)
            if dest.exists():
                if dest.is_dir() and not any(dest.iterdir()):
                    dest.rmdir()
                else:
                    return self._fail(
                        sandbox,
                        repo,
                        f"{folder} already exists in the workspace and is not a clone",
                    )
            partial = ws / f"{PARTIAL_PREFIX}{folder}-{secrets.token_hex(4)}"
            url = clone_url(self._git_base_url, repo)
            log.info(
                "controller.clone.started",
                namespace=ns,
                sandbox=name,
                repo=repo,
                url=scrub_credentials(url),
            )
            try:
                code, stderr = await self._run_git("clone", "--quiet", "--", url, str(partial))
            except TimeoutError:
                await asyncio.to_thread(shutil.rmtree, partial, True)
                return self._fail(
                    sandbox, repo, f"git clone timed out after {self._clone_timeout:g}s"
                )
            except OSError as exc:  # git missing or not executable: no retry will help
                await asyncio.to_thread(shutil.rmtree, partial, True)
                return self._fail(sandbox, repo, f"cannot run {self._git}: {exc.strerror or exc}")
            except BaseException:
                await asyncio.shield(asyncio.to_thread(shutil.rmtree, partial, True))
                raise
            if code != 0:
                await asyncio.to_thread(shutil.rmtree, partial, True)
                return self._fail(sandbox, repo, stderr or f"git clone exited with {code}")
            plain = without_userinfo(url)
            if plain != url:  # git keeps the clone URL in .git/config: drop the credential
                code, stderr = await self._run_git(
                    "-C", str(partial), "remote", "set-url", "origin", plain
                )
                if code != 0:
                    await asyncio.to_thread(shutil.rmtree, partial, True)
                    return self._fail(sandbox, repo, stderr or "git remote set-url failed")
            partial.rename(dest)
        log.info("controller.clone.finished", namespace=ns, sandbox=name, repo=repo)
        return True

    def _fail(self, sandbox: Sandbox, repo: str, message: str) -> bool:
        ns, name = sandbox.key
        text = clean_message(message)
        self._clone_errors.setdefault((ns, name), {})[repo] = _CloneError(
            sandbox.metadata.generation, text
        )
        log.warning("controller.clone.failed", namespace=ns, sandbox=name, repo=repo, error=text)
        return False

    @staticmethod
    def _remove_partials(ws: Path, folder: str) -> None:
        if not ws.is_dir():
            return
        for leftover in ws.glob(f"{PARTIAL_PREFIX}{folder}-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    async def _run_git(self, *args: str) -> tuple[int, str]:
        """Run git non-interactively; kill its process group on timeout or cancellation."""
        env = dict(os.environ)
        for var in ("GIT_ASKPASS", "SSH_ASKPASS"):
            env.pop(var, None)
        env["GIT_TERMINAL_PROMPT"] = "0"
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        proc = await asyncio.create_subprocess_exec(
            self._git,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), self._clone_timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
            raise
        assert proc.returncode is not None
        return proc.returncode, stderr.decode(errors="replace")
