"""Projection of a stored Sandbox into the wire item, and the phase lifecycle table."""

from __future__ import annotations

from typing import Any

from .errors import IllegalTransition
from .ledger import UsageTotals, format_spend
from .model import ANNOTATION_DISPLAY_NAME, Sandbox, SandboxStatus, format_time

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
