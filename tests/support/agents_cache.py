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
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable
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
        self._installed: set[str] = set()
        self._lock = threading.Lock()

    @property
    def agents_dir(self) -> Path:
        return self.data_dir / "agents"

    def ensure(self, *slugs: str) -> Path:
        """Install the ones not installed yet (one CLI call); the cache's agents dir."""
        with self._lock:
            todo = [s for s in slugs if s not in self._installed]
            if not todo:
                return self.agents_dir
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
            self._installed.update(todo)
            return self.agents_dir

    def place(self, data_dir: Path, *slugs: str, share: bool = False) -> Path:
        source = self.ensure(*slugs)
        data_dir.mkdir(parents=True, exist_ok=True)
        target = data_dir / "agents"
        if share:
            target.symlink_to(source, target_is_directory=True)
        else:
            shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
        return data_dir


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture(scope="session")
def agents_cache(tmp_path_factory: pytest.TempPathFactory) -> AgentsCache:
    return AgentsCache(tmp_path_factory.mktemp("agents-cache") / "data")


@pytest.fixture
def installed_agents_dir(agents_cache: AgentsCache) -> Callable[..., Path]:
    def place(data_dir: Path, *slugs: str, share: bool = False) -> Path:
        return agents_cache.place(data_dir, *slugs, share=share)

    return place
