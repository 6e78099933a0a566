"""Real agent installs, made once per test session and handed to the tests that need them.

Installing a real agent from the npm registry takes 5-15 s (opencode's package is
~350 MB unpacked), aider from PyPI over a minute; a test that only needs an installed
agent must not pay that each time. The session's cache is one data dir whose agents
are installed exactly as a user would, with ``sandbox agents install`` (a CLI
subprocess), the first time a test asks for them. npm's and pip's own download caches
(``~/.npm``, ``~/.cache/pip``) persist between sessions, so a warm machine mostly
unpacks.

Fixtures (registered in ``tests/conftest.py``):

``agents_cache``
    the session's :class:`AgentsCache`.
``installed_agents_dir``
    ``installed_agents_dir(data_dir, "opencode", "qwen-code", share=False)`` makes
    ``data_dir/agents`` hold those agents (installing them into the cache first if
    needed) and returns ``data_dir``. By default it is a copy made of hard links (fast,
    and the test may install or remove there without touching the cache); ``share=True``
    links the cache's folder itself (read-only use). A pip agent's scripts name the
    cache's venv interpreter, so a copy of it runs from the cache's venv (alive for the
    whole session).

When Node.js/npm is missing or too old (or the registry is unreachable) the test is
skipped with the reason, or fails under ``SANDBOX_TEST_REQUIRE_ALL=1`` (CI).

Installs start early: once collection is done (``pytest_collection_finish``, registered
in ``tests/conftest.py``), when a collected test uses these fixtures, a background thread
installs qwen-code, then opencode, then aider when an aider test was collected, while the
first tests run (pytest keeps one core busy; an install mostly waits on npm/pip or uses
the other). A test that needs an agent whose install is under way waits for it; one that
failed in the background is installed again in the test, which then reports the error.
Every install's CLI run is kept (:attr:`AgentsCache.installs`) for the tests of the
install command itself.

Under pytest-xdist the run's workers share one cache (in the run's temporary folder,
above each worker's own): installs hold a file lock and leave a record of their CLI run
(``installs/<slug>.json``), so an agent is installed once per run whichever worker asks
first, and the others find it (and its run) there. Both workers prefetch the same groups
in the same order, so a worker's :meth:`AgentsCache.settle` returns once every prefetched
agent is installed, by whichever worker; a copy of the cache is made under the lock, so
no install of the other worker changes the tree while it is copied.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from support.cli import run_sandbox

INSTALL_TIMEOUT = 900.0
NPM_AGENTS = {"opencode", "qwen-code", "claude-code"}
REQUIRE_ALL = "SANDBOX_TEST_REQUIRE_ALL"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip (printing why) - or, when CI requires every dependency, fail loudly."""
    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ALL}=1: real agent installs are mandatory)")
    print(f"\nskipping real agent installs: {reason}")
    pytest.skip(reason)


def node_problem() -> str | None:
    """Why npm agents cannot be installed here (None: they can)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "Node.js (node and npm) is not installed: real npm agents cannot be installed"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    major = out.stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 20:
        return f"Node.js {out.stdout.strip()} is older than 20: real npm agents need 20+"
    return None


def run_cli(*args: str, timeout: float = INSTALL_TIMEOUT, env: dict[str, str] | None = None):
    return run_sandbox(*args, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


class AgentsCache:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        # slug -> the `sandbox agents install` run that installed it
        self.installs: dict[str, subprocess.CompletedProcess[str]] = {}
        self._installed: set[str] = set()
        self._busy: dict[str, threading.Event] = {}  # installs under way
        self._lock = threading.Lock()
        self._prefetch: threading.Thread | None = None

    @property
    def agents_dir(self) -> Path:
        return self.data_dir / "agents"

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Held while installing into or copying the cache: across the threads of this
        process and the other xdist workers of the run, which share the cache."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir.parent / "install.lock", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)  # released when the file closes
            yield

    def _record_path(self, slug: str) -> Path:
        return self.data_dir.parent / "installs" / f"{slug}.json"

    def _recorded(self, slug: str) -> subprocess.CompletedProcess[str] | None:
        """The CLI run that installed ``slug`` into the cache (another worker's too)."""
        try:
            run = json.loads(self._record_path(slug).read_text())
        except FileNotFoundError:
            return None
        return subprocess.CompletedProcess(
            run["args"], run["returncode"], run["stdout"], run["stderr"]
        )

    def _record(self, slug: str, out: subprocess.CompletedProcess[str]) -> None:
        path = self._record_path(slug)
        path.parent.mkdir(exist_ok=True)
        run = {"args": list(out.args), "returncode": out.returncode}
        path.write_text(json.dumps({**run, "stdout": out.stdout, "stderr": out.stderr}))

    def ensure(self, *slugs: str) -> Path:
        """Install the ones not installed yet (one CLI call); the cache's agents dir."""
        while True:
            with self._lock:
                under_way = {self._busy[s] for s in slugs if s in self._busy}
                todo = [s for s in slugs if s not in self._installed and s not in self._busy]
                if not under_way and not todo:
                    return self.agents_dir
                if not under_way:
                    done = threading.Event()
                    self._busy.update(dict.fromkeys(todo, done))
            if under_way:  # another thread installs some of them: wait, then look again
                for event in under_way:
                    event.wait()
                continue
            try:
                self._install(todo)
            finally:
                with self._lock:
                    for slug in todo:
                        self._busy.pop(slug, None)
                done.set()

    def _install(self, todo: list[str]) -> None:
        with self._exclusive():
            found = {slug: run for slug in todo if (run := self._recorded(slug)) is not None}
            rest = [slug for slug in todo if slug not in found]
            if rest:
                found.update(dict.fromkeys(rest, self._run_install(rest)))
                for slug in rest:
                    self._record(slug, found[slug])
        with self._lock:
            self._installed.update(todo)
            self.installs.update(found)

    def _run_install(self, todo: list[str]) -> subprocess.CompletedProcess[str]:
        if NPM_AGENTS & set(todo):
            problem = node_problem()
            if problem:
                skip_or_fail(problem)
        out = run_cli("agents", "install", *todo, "--data-dir", str(self.data_dir))
        if out.returncode != 0:
            pytest.fail(
                f"`sandbox agents install {' '.join(todo)}` failed ({out.returncode}):\n"
                f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
            )
        return out

    def prefetch(self, *groups: tuple[str, ...]) -> None:
        """Install ``groups`` (one CLI call each, in order) in a background thread."""

        def run() -> None:
            for group in groups:
                try:
                    self.ensure(*group)
                except BaseException:  # pytest's skip/fail too: the test installs again
                    continue

        self._prefetch = threading.Thread(target=run, name="agents-prefetch", daemon=True)
        self._prefetch.start()

    def settle(self) -> None:
        """Wait until the background installs are done (the cache's tree stays as it is:
        for a copy of it, or a test that compares it before and after)."""
        if self._prefetch is not None:
            self._prefetch.join(INSTALL_TIMEOUT)

    def place(self, data_dir: Path, *slugs: str, share: bool = False) -> Path:
        source = self.ensure(*slugs)
        data_dir.mkdir(parents=True, exist_ok=True)
        target = data_dir / "agents"
        if share:
            target.symlink_to(source, target_is_directory=True)
        else:
            self.settle()
            with self._exclusive():
                shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
        return data_dir


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


_CACHE = pytest.StashKey[AgentsCache]()
FIXTURES = {"agents_cache", "installed_agents_dir"}


def session_cache(config: pytest.Config) -> AgentsCache:
    cache = config.stash.get(_CACHE, None)
    if cache is None:
        factory: pytest.TempPathFactory = config._tmp_path_factory  # type: ignore[attr-defined]
        root = factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            root = root.parent  # the run's folder: each worker's basetemp is below it
        cache = AgentsCache(root / "agents-cache" / "data")
        config.stash[_CACHE] = cache
    return cache


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the installs the collected tests will ask for (see the module's doc)."""
    if session.config.option.collectonly:
        return
    users = [i for i in session.items if FIXTURES & set(getattr(i, "fixturenames", ()))]
    if not users:
        return
    # one at a time, in the order the suite first needs them (the browser tier: qwen-code)
    groups = [("qwen-code",), ("opencode",)]
    params = [getattr(i, "callspec", None) for i in users]
    if any("aider" in spec.params.values() for spec in params if spec is not None):
        groups.append(("aider",))
    session_cache(session.config).prefetch(*groups)


@pytest.fixture(scope="session")
def agents_cache(request: pytest.FixtureRequest) -> AgentsCache:
    return session_cache(request.config)


@pytest.fixture
def installed_agents_dir(agents_cache: AgentsCache) -> Callable[..., Path]:
    def place(data_dir: Path, *slugs: str, share: bool = False) -> Path:
        return agents_cache.place(data_dir, *slugs, share=share)

    return place
