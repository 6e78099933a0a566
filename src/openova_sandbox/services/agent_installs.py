"""Agent installs started from the API, run in the background of the server process.

One job per agent at a time (a second request while it runs is a ``Conflict``); each
job keeps its progress lines (the last ``LOG_LINES``, each cut to ``LINE_CHARS``) and,
once finished, its outcome, until the next install of that agent replaces it. The
install itself is :class:`~openova_sandbox.agents.installer.Installer` on a worker
thread; stopping the server cancels running installs (their half-built dirs are
removed as for any failed install).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ..agents.installer import Installer, plan_install
from ..domain.catalogue import Catalogue
from ..domain.errors import Conflict, SandboxError

log = structlog.get_logger(__name__)

LOG_LINES = 400
LINE_CHARS = 500
RUNNING, SUCCEEDED, FAILED, IDLE = "running", "succeeded", "failed", "idle"


@dataclass
class InstallJob:
    slug: str
    requested: str | None
    state: str = RUNNING
    error: str | None = None
    version: str | None = None
    _log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, line: str) -> None:
        with self._lock:
            self._log.append(line[:LINE_CHARS])

    @property
    def log(self) -> list[str]:
        with self._lock:
            return list(self._log)

    @property
    def running(self) -> bool:
        return self.state == RUNNING


class AgentInstalls:
    """The install jobs of one embedded server (a ``Lifecycle``: ``stop`` cancels)."""

    def __init__(
        self, *, data_dir: Path, catalogue: Catalogue, server_path: str | None = None
    ) -> None:
        self.data_dir = data_dir
        self.catalogue = catalogue
        self.server_path = server_path
        self._jobs: dict[str, InstallJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._installers: dict[str, Installer] = {}

    def installer(self) -> Installer:
        return Installer(self.data_dir, self.catalogue, path=self.server_path)

    def job(self, slug: str) -> InstallJob | None:
        return self._jobs.get(slug)

    def begin(self, slug: str, version: str | None = None) -> InstallJob:
        """Start installing; raises AgentNotFound, NotInstallable, Invalid (version) or
        Conflict (``install-running``) before anything starts."""
        plan = plan_install(self.catalogue, slug, version)
        running = self._jobs.get(plan.slug)
        if running is not None and running.running:
            raise Conflict(f"{plan.slug} is being installed right now", code="install-running")
        job = InstallJob(slug=plan.slug, requested=version)
        installer = self.installer()
        self._jobs[plan.slug] = job
        self._installers[plan.slug] = installer
        self._tasks[plan.slug] = asyncio.create_task(
            self._run(job, installer, version), name=f"agent-install-{plan.slug}"
        )
        log.info("agent_install.started", agent=plan.slug, version=plan.version)
        return job

    async def _run(self, job: InstallJob, installer: Installer, version: str | None) -> None:
        try:
            result = await asyncio.to_thread(installer.install, job.slug, version, job.add)
        except SandboxError as exc:
            job.error = exc.detail or exc.code
            job.add(f"error: {job.error}")
            job.state = FAILED
            log.warning("agent_install.failed", agent=job.slug, error=job.error)
        except Exception as exc:  # an OSError from the disk, a bug: still a visible outcome
            job.error = f"the install failed unexpectedly: {exc}"
            job.add(f"error: {job.error}")
            job.state = FAILED
            log.exception("agent_install.crashed", agent=job.slug)
        else:
            job.version = result.version
            job.state = SUCCEEDED
            log.info("agent_install.succeeded", agent=job.slug, version=result.version)
        finally:
            self._installers.pop(job.slug, None)
            self._tasks.pop(job.slug, None)

    async def wait(self, slug: str) -> None:
        """Until the running install of ``slug`` (if any) has finished (tests)."""
        task = self._tasks.get(slug)
        if task is not None:
            await asyncio.shield(task)

    async def remove(self, slug: str) -> bool:
        """Remove the managed install; Conflict while an install of it runs."""
        job = self._jobs.get(slug)
        if job is not None and job.running:
            raise Conflict(f"{slug} is being installed right now", code="install-running")
        removed = await asyncio.to_thread(self.installer().remove, slug)
        if removed:
            self._jobs.pop(slug, None)  # its old outcome no longer describes anything
            log.info("agent_install.removed", agent=slug)
        return removed

    # ------------------------------------------------------------------ Lifecycle
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """Cancel running installs and wait until they have cleaned up."""
        for installer in list(self._installers.values()):
            installer.cancel()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
