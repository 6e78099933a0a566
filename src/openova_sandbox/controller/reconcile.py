"""Reconcile is a pure function: (Sandbox, what the runtime observed, now) -> Plan.

No I/O, no clock, no asyncio: the runner observes, calls :func:`reconcile`, executes the
plan's actions and writes its status; this module only decides. That keeps every rule of
the lifecycle (docs/lifecycle.md) testable by table and by property, and the same plan
shape can drive another runtime later.

Decisions:
- The finalizer is the first write. A plan that adds it to a sandbox with no status yet
  also makes the (empty) workspace and HOME folders, which the runner does while the
  finalizer is being written, and writes no status: the next pass writes the first one
  once it can say what is there (``Ready`` at once when there is nothing to clone, else
  ``Provisioning`` before the clones). A sandbox that already has a phase gets
  ``Pending`` (or the legal stop towards it) with its finalizer, and nothing else.
- A status write records where the sandbox is now, along the phase table: when every
  condition is observed ``True`` a sandbox provisioned for the first time (no phase
  yet, or ``Pending``) goes to ``Ready`` in one write, although the table has
  ``Provisioning`` in between: provisioning is finished, so that stop has nothing left
  to announce. Every other move is one the table allows directly (a ``Failed`` sandbox
  whose agent can start again shows ``Provisioning``, then ``Ready``).
- Invalid specs fail permanently for their generation: no finalizer is added for them
  (there is nothing to clean up) and nothing is retried until the spec changes.
- An agent that cannot start (binary gone, exec error, a required variable missing) is
  ``Failed``/``AgentUnavailable`` on ``PtyReady``, decided once everything before it is
  in place. Unlike the other failures it is not permanent for the generation: it is
  looked at again on every pass and clears as soon as the runtime says the agent can
  start (installed, configured, or a later start succeeded). Create refuses an agent
  that is not installed or configured (``agent-not-installed``/``-configured``), so this
  is what becomes of one that broke afterwards.
- ``QuotaExceeded`` is not a provisioning failure here: the API reports it when a
  terminal is opened.
- A condition keeps its ``lastTransitionTime`` while its status is unchanged, and the
  plan writes status only when something differs, so an up-to-date sandbox gets an
  empty plan and the store sees no write. Phase steps, the ``Ready`` summary and that
  merge are the status kernel's (``domain.status``), shared with the operator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from ..domain.model import FINALIZER, READY, Sandbox, SandboxStatus
from ..domain.naming import is_valid_slug, repo_org, repo_problem
from ..domain.quantity import parse_quantity
from ..domain.status import (
    AGENT_UNAVAILABLE,
    FAILED,
    PENDING,
    PROVISIONING,
    Failure,
    Row,
    agent_unavailable,
    next_status,
    step,
)
from ..domain.status import FALSE as FALSE  # re-exported: the terminal port's conditions
from ..domain.status import READY as PHASE_READY
from ..domain.status import TRUE as TRUE
from ..domain.status import UNKNOWN as UNKNOWN
from .scrub import clean_message

# lastActivityAt is advanced only when the terminals report activity at least this much
# newer than the stored value: activity is continuous while someone types, writes are not.
ACTIVITY_RESOLUTION = timedelta(seconds=30)
# While waiting for something the runtime does not announce (the terminal server coming
# up), look again after this many seconds.
WAIT_POLL_SECONDS = 2.0

STORAGE_WITHIN_QUOTA = "StorageWithinQuota"

# Failure reasons (sandbox-resource.md).
OWNER_EMAIL_MISSING = "OwnerEmailMissing"
OWNER_EMAIL_INVALID = "OwnerEmailInvalid"
OWNER_ORG_REF_MISSING = "OwnerOrgRefMissing"
CROSS_ORG_REPO = "CrossOrgRepo"
CLONE_FAILED = "CloneFailed"
MANIFEST_RENDER_FAILED = "ManifestRenderFailed"

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_UNSAFE_COMPONENT = re.compile(r"[/\\\x00-\x1f\x7f]")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Observed:
    """What the runtime saw for one sandbox, just before reconciling it."""

    workspace_exists: bool = False
    cloned: frozenset[str] = frozenset()  # repos (``org/name``) present in the workspace
    clone_errors: Mapping[str, str] = field(default_factory=dict)  # repo -> git's message
    terminal_serving: bool = False
    sessions: int = 0
    last_activity: datetime | None = None
    # why the sandbox's agent cannot start now ("" when it can, or nobody knows yet)
    agent_error: str = ""
    # bytes the workspace takes on disk (None: not measured yet; issue 12)
    storage_used: int | None = None
    # the McpReady row the terminal host gives for this sandbox, (status, reason,
    # message): whether its agents' MCP server answers for it; None: no MCP server here
    mcp: tuple[str, str, str] | None = None


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class AddFinalizer:
    pass


@dataclass(frozen=True)
class EnsureWorkspace:
    pass


@dataclass(frozen=True)
class CloneRepo:
    repo: str  # ``org/name``


@dataclass(frozen=True)
class StopTerminals:
    pass


@dataclass(frozen=True)
class RemoveWorkspace:
    pass


@dataclass(frozen=True)
class RemoveFinalizer:
    pass


Action = (
    AddFinalizer | EnsureWorkspace | CloneRepo | StopTerminals | RemoveWorkspace | RemoveFinalizer
)


@dataclass(frozen=True)
class Plan:
    """Ordered actions, the status to write (``None``: unchanged) and when to look again.

    Order is part of the contract: ``AddFinalizer`` always comes first and
    ``RemoveFinalizer`` last; the status is written after any finalizer addition and
    before the first action with an effect outside the store. The one action that may
    follow ``AddFinalizer`` is ``EnsureWorkspace`` (empty folders, nothing to announce),
    which the runner carries out while the finalizer is written.
    """

    actions: tuple[Action, ...] = ()
    status: SandboxStatus | None = None
    requeue_after: float | None = None  # seconds; 0 means "reconcile again right away"

    @property
    def empty(self) -> bool:
        return not self.actions and self.status is None


# --------------------------------------------------------------------------- validation


def safe_component(value: str) -> bool:
    """Whether ``value`` can be one folder name under the data directory."""
    return (
        bool(value)
        and value not in {".", ".."}
        and len(value.encode()) <= 255
        and not _UNSAFE_COMPONENT.search(value)
    )


def unique_repos(sandbox: Sandbox) -> tuple[str, ...]:
    return tuple(dict.fromkeys(sandbox.spec.repos))


def validate(sandbox: Sandbox) -> Failure | None:
    """The first rule the spec breaks, in the order a reader would check them."""
    meta, spec = sandbox.metadata, sandbox.spec
    for label, value in (("namespace", meta.namespace), ("name", meta.name)):
        if not safe_component(value):
            return Failure(
                MANIFEST_RENDER_FAILED,
                f"metadata.{label} {value!r} cannot name a workspace folder",
                "NamespaceReady",
            )
    email = spec.owner_email.strip()
    if not email:
        return Failure(OWNER_EMAIL_MISSING, "spec.owner.email is required", READY)
    if not _EMAIL.match(email):
        return Failure(
            OWNER_EMAIL_INVALID, f"spec.owner.email {email!r} is not an email address", READY
        )
    slug = spec.org_slug
    if not slug.strip():
        return Failure(OWNER_ORG_REF_MISSING, "spec.owner.orgRef.slug is required", READY)
    if not is_valid_slug(slug):
        return Failure(
            OWNER_ORG_REF_MISSING,
            f"spec.owner.orgRef.slug {slug!r} is not a valid slug "
            "(lowercase letter, then 2-31 lowercase letters, digits or '-')",
            READY,
        )
    for repo in unique_repos(sandbox):
        problem = repo_problem(repo)
        if problem:
            return Failure(MANIFEST_RENDER_FAILED, f"repo {repo!r} {problem}", "PVCsReady")
        if repo_org(repo) != slug:
            return Failure(
                CROSS_ORG_REPO,
                f"repo {repo!r} belongs to org {repo_org(repo)!r}, not to the owner's org {slug!r}",
                "PVCsReady",
            )
    return None


# --------------------------------------------------------------------------- reconcile


def reconcile(sandbox: Sandbox, observed: Observed, now: datetime) -> Plan:
    """Decide what to do next for ``sandbox``; pure and idempotent."""
    now = now.replace(microsecond=0)
    meta, status = sandbox.metadata, sandbox.status
    has_finalizer = FINALIZER in meta.finalizers

    if sandbox.deleting:
        return _finalize(has_finalizer=has_finalizer, observed=observed)

    if (
        status.phase == FAILED
        and status.observed_generation == meta.generation
        and not agent_unavailable(status)
    ):
        # Permanent for this generation: only the live counters move.
        return _plan(status, _with_activity(status, observed))

    failure = validate(sandbox)
    if failure is not None:
        conditions = _conditions(sandbox, observed, failure)
        new = _next_status(sandbox, observed, conditions, phase=FAILED, now=now, failure=failure)
        return _plan(status, new)

    if not has_finalizer:
        if not status.phase:
            first: tuple[Action, ...] = (AddFinalizer(),)
            if not observed.workspace_exists:
                first = (*first, EnsureWorkspace())
            return Plan(actions=first, requeue_after=0.0)
        conditions = _conditions(sandbox, observed, None)
        target = step(status.phase, PENDING)
        new = _next_status(sandbox, observed, conditions, phase=target, now=now)
        return _plan(status, new, actions=(AddFinalizer(),), requeue_after=0.0)

    failure = _clone_failure(sandbox, observed)
    conditions = _conditions(sandbox, observed, failure)
    if failure is not None:
        new = _next_status(sandbox, observed, conditions, phase=FAILED, now=now, failure=failure)
        return _plan(status, new)

    actions: list[Action] = []
    if not observed.workspace_exists:
        actions.append(EnsureWorkspace())
    actions.extend(CloneRepo(r) for r in unique_repos(sandbox) if r not in observed.cloned)

    if not actions and observed.agent_error:
        failure = Failure(AGENT_UNAVAILABLE, clean_message(observed.agent_error), "PtyReady")
        conditions = _conditions(sandbox, observed, failure)
        new = _next_status(sandbox, observed, conditions, phase=FAILED, now=now, failure=failure)
        return _plan(status, new)

    all_true = all(c[1] == TRUE for c in conditions)
    target = PHASE_READY if all_true else PROVISIONING
    phase = step(status.phase, target)
    new = _next_status(sandbox, observed, conditions, phase=phase, now=now)
    requeue: float | None = None
    if phase != target:
        requeue = 0.0
    elif not all_true and not actions:
        requeue = WAIT_POLL_SECONDS
    return _plan(status, new, actions=tuple(actions), requeue_after=requeue)


def reconcile_orphan(observed: Observed) -> Plan:
    """Clean up after a sandbox that is gone from the store without our finalizer's help."""
    actions: list[Action] = []
    if observed.sessions > 0:
        actions.append(StopTerminals())
    if observed.workspace_exists:
        actions.append(RemoveWorkspace())
    return Plan(actions=tuple(actions))


def _finalize(*, has_finalizer: bool, observed: Observed) -> Plan:
    if not has_finalizer:
        return Plan()
    actions: list[Action] = [StopTerminals()]
    if observed.workspace_exists:
        actions.append(RemoveWorkspace())
    actions.append(RemoveFinalizer())
    return Plan(actions=tuple(actions))


def _plan(
    old: SandboxStatus,
    new: SandboxStatus,
    *,
    actions: tuple[Action, ...] = (),
    requeue_after: float | None = None,
) -> Plan:
    return Plan(actions=actions, status=None if new == old else new, requeue_after=requeue_after)


def _clone_failure(sandbox: Sandbox, observed: Observed) -> Failure | None:
    for repo in unique_repos(sandbox):
        if repo in observed.cloned:
            continue
        error = observed.clone_errors.get(repo)
        if error is not None:
            detail = clean_message(error) or "git exited with an error"
            return Failure(CLONE_FAILED, f"cloning {repo} failed: {detail}", "PVCsReady")
    return None


# --------------------------------------------------------------------------- status

_Desired = Row  # type, status, reason, message


def _conditions(sandbox: Sandbox, observed: Observed, failure: Failure | None) -> list[_Desired]:
    """The provisioning conditions, in order, without the summary ``Ready``."""
    blocked = f"not attempted: {failure.reason}" if failure else ""
    ns, name = sandbox.namespace, sandbox.name
    out: list[_Desired] = []

    if failure is not None and failure.condition == "NamespaceReady":
        out.append(("NamespaceReady", FALSE, failure.reason, failure.message))
    elif observed.workspace_exists:
        out.append(("NamespaceReady", TRUE, "WorkspaceCreated", f"workspace {ns}/{name} exists"))
    else:
        out.append(
            (
                "NamespaceReady",
                UNKNOWN,
                "NotAttempted" if blocked else "Creating",
                blocked or f"creating workspace {ns}/{name}",
            )
        )

    out.append(
        ("RBACReady", TRUE, "LocalUser", "embedded mode: processes run as the server's user")
    )

    repos = unique_repos(sandbox)
    missing = [r for r in repos if r not in observed.cloned]
    if failure is not None and failure.condition == "PVCsReady":
        out.append(("PVCsReady", FALSE, failure.reason, failure.message))
    elif not repos:
        out.append(("PVCsReady", TRUE, "NoRepos", "no repos to clone"))
    elif not missing:
        out.append(("PVCsReady", TRUE, "ReposCloned", f"{len(repos)} repo(s) cloned"))
    else:
        out.append(
            (
                "PVCsReady",
                UNKNOWN,
                "NotAttempted" if blocked else "Cloning",
                blocked or "cloning " + ", ".join(missing),
            )
        )

    if failure is not None and failure.condition == "PtyReady":
        out.append(("PtyReady", FALSE, failure.reason, failure.message))
    elif observed.terminal_serving:
        out.append(("PtyReady", TRUE, "Serving", "the terminal server is serving"))
    else:
        out.append(("PtyReady", UNKNOWN, "Waiting", "the terminal server is not serving yet"))

    out.append(
        ("McpReady", *observed.mcp)
        if observed.mcp is not None
        else ("McpReady", TRUE, "NotApplicable", "no MCP server in this runtime")
    )
    out.append(("TokenReady", TRUE, "NotApplicable", "embedded mode: no sandbox token"))
    return out


def _next_status(
    sandbox: Sandbox,
    observed: Observed,
    desired: list[_Desired],
    *,
    phase: str,
    now: datetime,
    failure: Failure | None = None,
) -> SandboxStatus:
    """The status kernel's (``domain.status.next_status``), with the workspace's storage
    as a flag beside the others, not one ``Ready`` waits for, and the live counters."""
    storage = _storage(sandbox, observed)
    return next_status(
        _with_activity(sandbox.status, observed),
        desired,
        phase=phase,
        now=now,
        generation=sandbox.metadata.generation,
        failure=failure,
        flags=() if storage is None else (storage,),
    )


def _with_activity(status: SandboxStatus, observed: Observed) -> SandboxStatus:
    last = status.last_activity_at
    seen = observed.last_activity
    if seen is not None and (last is None or seen - last >= ACTIVITY_RESOLUTION):
        last = seen
    used = status.storage_used
    if observed.storage_used is not None:
        used = storage_quantity(observed.storage_used)
    return replace(
        status, sessions=max(0, observed.sessions), last_activity_at=last, storage_used=used
    )


def storage_quantity(size: int) -> str:
    """Bytes as a quantity of at most one decimal (``1.5Gi``, ``312Mi``, ``900``), so a
    workspace growing by a few bytes is not a status write."""
    value, unit = float(size), ""
    for suffix in ("Ki", "Mi", "Gi", "Ti"):
        if value < 1024:
            break
        value, unit = value / 1024, suffix
    text = f"{value:.1f}".removesuffix(".0") if unit else str(size)
    return f"{text}{unit}"


def _storage(sandbox: Sandbox, observed: Observed) -> _Desired | None:
    """``StorageWithinQuota``: the workspace against ``quota.storage`` (issue 12).
    Nothing refuses writes past it; the sandbox is flagged (False, StorageExceeded)."""
    if observed.storage_used is None:
        return None
    quota = sandbox.spec.quota.storage
    limit = parse_quantity(quota) if quota else None
    used = storage_quantity(observed.storage_used)
    if limit is not None and observed.storage_used > limit:
        message = f"the workspace uses {used}, past its storage quota of {quota}"
        return (STORAGE_WITHIN_QUOTA, FALSE, "StorageExceeded", message)
    of = f" of {quota}" if limit is not None else ""
    return (STORAGE_WITHIN_QUOTA, TRUE, "WithinQuota", f"the workspace uses {used}{of}")
