"""Projection of a stored Sandbox into the wire item, the phase lifecycle table, and
the status kernel both controllers write their status with.

The status kernel (issue 13: the embedded controller and the Kubernetes operator each
carried a copy, and they differed) is pure: each controller decides its own provisioning
conditions (what it observed) and the phase it aims for; the kernel takes the legal step
towards that phase, adds the ``Ready`` summary, and merges the rows into the stored
conditions keeping each one's ``lastTransitionTime`` while its status is unchanged.
Where the two copies differed, the kernel keeps:
- ``Ready`` in one write for a sandbox provisioned for the first time (no phase, or
  ``Pending``) once every condition is ``True`` (the operator went through
  ``Provisioning`` for nothing, one more write);
- a ``Ready`` summary that is ``True`` only with the phase ``Ready`` (the operator said
  ``True`` while the phase was still ``Provisioning``), and while waiting the phase as
  its reason (``Pending`` or ``Provisioning``; the operator always said
  ``Provisioning``);
- ``Suspended``: ``Ready`` ``False`` with reason ``Suspended`` (only the operator
  suspends);
- stepping never raises: ``Provisioning`` is legal from every phase (the embedded copy
  raised where it could not happen).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .errors import IllegalTransition
from .ledger import UsageTotals, format_spend
from .model import (
    ANNOTATION_DISPLAY_NAME,
    Condition,
    Sandbox,
    SandboxStatus,
    format_time,
)
from .model import (
    READY as READY_CONDITION,
)

PENDING, PROVISIONING, READY, SUSPENDED, FAILED = (
    "Pending",
    "Provisioning",
    "Ready",
    "Suspended",
    "Failed",
)

# Phases only move forward, except the Ready <-> Suspended idle cycle and a
# Failed sandbox re-entering Provisioning when its spec changes (a new generation).
TRANSITIONS: dict[str, frozenset[str]] = {
    "": frozenset({PENDING, PROVISIONING, FAILED}),
    PENDING: frozenset({PROVISIONING, FAILED}),
    PROVISIONING: frozenset({READY, FAILED}),
    READY: frozenset({SUSPENDED, FAILED, PROVISIONING}),
    SUSPENDED: frozenset({READY, PROVISIONING, FAILED}),
    FAILED: frozenset({PROVISIONING}),
}


# The one failure that is not permanent for its generation: the agent could not start.
AGENT_UNAVAILABLE = "AgentUnavailable"


def agent_unavailable(status: SandboxStatus) -> bool:
    """Whether the sandbox failed because its agent could not start (it clears again as
    soon as the agent can start)."""
    ready = status.condition("Ready")
    return status.phase == FAILED and ready is not None and ready.reason == AGENT_UNAVAILABLE


def check_transition(current: str, target: str) -> None:
    if current == target:
        return
    if target not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(
            f"controller bug: phase {current or '<empty>'!r} cannot move to {target!r}"
        )


# --------------------------------------------------------------------------- kernel

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# one condition as a controller decides it: (type, status, reason, message)
Row = tuple[str, str, str, str]


@dataclass(frozen=True)
class Failure:
    """Why a sandbox failed: its ``Ready`` reason and message, and the provisioning
    condition it belongs to (or ``Ready`` itself)."""

    reason: str
    message: str
    condition: str


# phases of a sandbox provisioned for the first time, from which Ready is reached in one
# write; a Failed or Suspended one going back to Ready shows its Provisioning step
_FIRST_TIME = frozenset({"", PENDING})


def legal(current: str, target: str) -> bool:
    try:
        check_transition(current, target)
    except IllegalTransition:
        return False
    return True


def step(current: str, target: str) -> str:
    """``target`` if the phase table allows it from ``current``, else the one legal
    stop on the way (``Provisioning``, legal from every phase).

    ``Ready`` is aimed for only when every condition is observed ``True``: for a sandbox
    provisioned for the first time the stop in between (``Provisioning``) is then
    already behind it, so the phase goes the whole way in this one write."""
    if current not in TRANSITIONS:
        current = ""
    if legal(current, target):
        return target
    if target == READY and current in _FIRST_TIME:
        return target
    return PROVISIONING


SUSPENDED_MESSAGE = "idle: scaled to zero until the next attach"


def ready_summary(rows: Sequence[Row], *, phase: str, failure: Failure | None) -> Row:
    """The ``Ready`` condition: the failure when there is one; ``False`` while
    suspended; ``Unknown`` naming what is not ``True`` yet (reason: the phase); ``True``
    only when every condition is and the phase is ``Ready``."""
    if failure is not None:
        return (READY_CONDITION, FALSE, failure.reason, failure.message)
    if phase == SUSPENDED:
        return (READY_CONDITION, FALSE, SUSPENDED, SUSPENDED_MESSAGE)
    waiting = [row[0] for row in rows if row[1] != TRUE]
    if waiting:
        return (READY_CONDITION, UNKNOWN, phase or PENDING, "waiting for " + ", ".join(waiting))
    if phase != READY:  # everything is up, but the phase has one more step to take
        return (
            READY_CONDITION,
            UNKNOWN,
            phase or PENDING,
            f"all conditions are met; phase is {phase or PENDING}",
        )
    return (READY_CONDITION, TRUE, "Ready", "all conditions are met")


def merge_conditions(
    old: Sequence[Condition], rows: Sequence[Row], now: datetime
) -> tuple[Condition, ...]:
    """``rows`` as conditions, in their order: each keeps its ``lastTransitionTime``
    while its status is unchanged (reason and message may change under it), else gets
    ``now``. Conditions of other types (another writer's, a later version's) are kept,
    after ours."""
    by_type = {c.type: c for c in old}
    ours = {row[0] for row in rows}
    merged: list[Condition] = []
    for type_, status, reason, message in rows:
        before = by_type.get(type_)
        kept = before.last_transition_time if before is not None else None
        when = kept if before is not None and before.status == status and kept else now
        merged.append(Condition(type_, status, reason, message, when))
    merged.extend(c for c in old if c.type not in ours)
    return tuple(merged)


def next_status(
    old: SandboxStatus,
    rows: Sequence[Row],
    *,
    phase: str,
    now: datetime,
    generation: int,
    failure: Failure | None = None,
    flags: Sequence[Row] = (),
) -> SandboxStatus:
    """``old`` with the provisioning conditions ``rows``, the ``Ready`` summary after
    them, then ``flags`` (conditions ``Ready`` does not wait for), the phase stepped
    towards ``phase``, and ``observedGeneration``. ``now`` is cut to whole seconds (what
    the wire keeps), so an unchanged status compares equal."""
    phase = step(old.phase, phase)
    now = now.replace(microsecond=0)
    rows_all = [*rows, ready_summary(rows, phase=phase, failure=failure), *flags]
    return replace(
        old,
        phase=phase,
        conditions=merge_conditions(old.conditions, rows_all, now),
        observed_generation=generation,
    )


# the item's status while the sandbox's deletion mark is set, whatever its phase
STOPPING = "stopping"


def project_status(phase: str) -> str:
    match phase.strip().lower():
        case "" | "pending" | "provisioning":
            return "pending"
        case "ready":
            return "running"
        case "suspended":
            return "stopped"
        case "failed":
            return "failed"
        case _:
            return "unknown"


def attach_path(sandbox_id: str) -> str:
    return f"/api/v1/sandbox/sessions/{sandbox_id}/attach"


def to_item(sandbox: Sandbox, usage: UsageTotals | None = None) -> dict[str, Any]:
    """The SandboxItem of sessions-api.md, key for key. With the sandbox's model usage
    of the last 30 days (the gateway's ledger), ``spend30d`` is that cost and
    ``usage30d`` its tokens and cost."""
    meta, spec, status = sandbox.metadata, sandbox.spec, sandbox.status
    created = meta.creation_timestamp
    item: dict[str, Any] = {
        "id": meta.name,
        "name": meta.annotations.get(ANNOTATION_DISPLAY_NAME) or meta.name,
        "agent": spec.default_agent,
        "status": STOPPING if meta.deletion_timestamp else project_status(status.phase),
        "createdAt": format_time(created) if created else "",
        "repo": spec.repos[0] if spec.repos else "",
    }
    if meta.deletion_timestamp:
        # being deleted: the controller is stopping its terminals and removing its
        # workspace; the object is gone once that is done (issue 11)
        item["deletionTimestamp"] = format_time(meta.deletion_timestamp)
    if status.phase:
        item["phase"] = status.phase
    item["sessions"] = status.sessions
    if status.storage_used:
        item["storageUsed"] = status.storage_used
    if usage is not None:
        item["spend30d"] = format_spend(usage.cost_usd)
        item["usage30d"] = usage.item_usage()
    elif status.spend_30d:
        item["spend30d"] = status.spend_30d
    item["previews"] = [p.to_dict() for p in status.previews]
    item["conditions"] = [c.to_dict() for c in status.conditions]
    item["attachUrl"] = attach_path(meta.name)
    return item
