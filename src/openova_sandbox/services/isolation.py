"""Which isolation embedded mode's terminals get, decided once at start (issue 12).

``SANDBOX_ISOLATION``:

- ``auto`` (default): each sandbox in a bubblewrap view of its own
  (:mod:`openova_sandbox.terminal.isolation`) when bubblewrap is installed and the
  kernel allows unprivileged user namespaces; otherwise the server says so, names what is
  not isolated, and starts only for one user: with an external OIDC issuer (several
  people) it refuses to start;
- ``bwrap``: isolation is required; the server does not start without it;
- ``none``: no isolation, chosen by the operator (said at start too).

What is in force is reported to signed-in users (``isolation`` in
``GET /api/v1/sandbox/whoami``) and in the start log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..agents.paths import agent_search_path
from ..config import Settings
from ..domain.errors import Invalid
from ..terminal import cgroups as cgroup_finder
from ..terminal.cgroups import Cgroups
from ..terminal.isolation import Policy, probe

log = structlog.get_logger(__name__)

# what a terminal reaches without isolation (named at start and in whoami)
NOT_ISOLATED = (
    "the data dir (issuer signing key, cookie secret, database, BYOS vault)",
    "every other sandbox's workspace and HOME",
    "this server's HOME and environment (/proc/<pid>/environ)",
    "this server's and other sandboxes' processes (kill)",
    "per-sandbox process and memory limits",
)
# what isolation does not cover either (docs/architecture.md, "Isolation")
ALWAYS_SHARED = (
    "the kernel (hostile code: Kubernetes mode with gVisor or Kata)",
    "CPU time (no per-sandbox CPU quota without a cgroup)",
    "the network, unless the org is offline (loopback only)",
)


@dataclass(frozen=True)
class IsolationState:
    """The isolation in force: ``mode`` ``bwrap`` or ``none``, the policy when on,
    why it is off, and what the start took to find out."""

    mode: str
    policy: Policy | None = None
    reason: str = ""
    probe_ms: float = 0.0
    not_isolated: tuple[str, ...] = field(default=())
    # the per-sandbox cgroups this machine lets the server make (None: none)
    cgroups: Cgroups | None = None

    @property
    def controllers(self) -> list[str]:
        return self.cgroups.controllers if self.cgroups is not None else []

    def process_limit(self) -> int | None:
        """Processes per sandbox: a pids cgroup, else RLIMIT_NPROC in the sandbox's
        user namespace, which the kernel does not apply to a server running as root."""
        if self.policy is None:
            return None
        if "pids" in self.controllers or os.geteuid() != 0:
            return self.policy.processes
        return None

    def memory_limit(self) -> str:
        if "memory" in self.controllers:
            return "the sandbox's quota, all its processes together (cgroup)"
        return "the sandbox's quota, per process (RLIMIT_DATA)"

    def cpu_limit(self) -> str | None:
        return "the sandbox's quota, as a rate (cgroup)" if "cpu" in self.controllers else None

    def details(self) -> dict[str, Any]:
        """The JSON ``whoami`` reports (no path of this server's)."""
        body: dict[str, Any] = {"mode": self.mode}
        if self.policy is not None:
            body["network"] = self.policy.network
            body["processLimit"] = self.process_limit()
            body["memoryLimit"] = self.memory_limit()
            body["cpuLimit"] = self.cpu_limit()
        else:
            body["reason"] = self.reason
        body["notIsolated"] = list(self.not_isolated)
        return body


def decide(settings: Settings, *, path_env: str | None = None) -> IsolationState:
    """The isolation for ``settings``; raises :class:`Invalid` (the server must not
    start) when it is required and unavailable, or unavailable with several users."""
    if settings.isolation == "none":
        return IsolationState("none", reason="SANDBOX_ISOLATION=none", not_isolated=NOT_ISOLATED)
    secret_files = [settings.llm_config] if settings.llm_config else []
    found = probe(
        data_dir=str(settings.data_dir),
        path_env=path_env or agent_search_path(settings.data_dir),
        extra_paths=settings.isolation_paths,
        secret_files=secret_files,
        processes=settings.isolation_processes,
        offline_orgs=settings.isolation_offline_orgs,
        network=settings.isolation_network,
    )
    if found.policy is not None:
        bases = cgroup_finder.find() if settings.isolation_cgroups else {}
        groups = Cgroups(bases, processes=settings.isolation_processes)
        groups.sweep()
        shared = [*ALWAYS_SHARED]
        if "cpu" in groups.controllers:
            shared.remove(ALWAYS_SHARED[1])
        if os.geteuid() == 0:
            shared.append(
                "files root owns, as this server runs as root (its sandboxes' processes "
                "own them too; only /etc/shadow, /etc/gshadow, /etc/ssh and "
                "/etc/ssl/private are masked): run it as an unprivileged user"
            )
        return IsolationState(
            "bwrap",
            found.policy,
            probe_ms=found.took_ms,
            not_isolated=tuple(shared),
            cgroups=groups if groups.bases else None,
        )
    several_users = bool(settings.oidc_issuer or settings.jwks_url)
    if settings.isolation == "bwrap":
        raise Invalid(f"SANDBOX_ISOLATION=bwrap but {found.reason}", code="isolation-unavailable")
    if several_users:
        raise Invalid(
            f"cannot isolate sandboxes from each other ({found.reason}) and an external "
            "OIDC issuer is configured (several users): every terminal could read the "
            "data dir and every other user's workspace. Install bubblewrap and allow "
            "unprivileged user namespaces, or set SANDBOX_ISOLATION=none to accept that",
            code="isolation-unavailable",
        )
    return IsolationState("none", reason=found.reason, not_isolated=NOT_ISOLATED)


def announce(state: IsolationState) -> None:
    """The start log's line: what is isolated, or what is not and why."""
    if state.policy is not None:
        policy = state.policy
        log.info(
            "isolation",
            mode=state.mode,
            network=policy.network,
            offline_orgs=sorted(policy.offline_orgs),
            cgroups=state.controllers or "none writable",
            process_limit=state.process_limit() or "none (root is exempt from RLIMIT_NPROC)",
            memory_limit=state.memory_limit(),
            cpu_limit=state.cpu_limit() or "none (no writable cpu cgroup)",
            probe_ms=round(state.probe_ms, 1),
            not_isolated=list(state.not_isolated),
        )
        return
    log.warning(
        "isolation_off",
        mode=state.mode,
        reason=state.reason,
        not_isolated=list(state.not_isolated),
        detail="every terminal runs as this server's OS user; serve one user only, or "
        "use Kubernetes mode for users who must not reach each other",
    )
