"""The status kernel both controllers write with (issue 13): phase steps, the Ready
summary, the condition merge that keeps lastTransitionTime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openova_sandbox.domain.model import Condition, SandboxStatus
from openova_sandbox.domain.status import (
    FAILED,
    PENDING,
    PROVISIONING,
    READY,
    SUSPENDED,
    TRANSITIONS,
    Failure,
    Row,
    legal,
    merge_conditions,
    next_status,
    ready_summary,
    step,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PHASES = ("", PENDING, PROVISIONING, READY, SUSPENDED, FAILED)
UP: list[Row] = [("NamespaceReady", "True", "Created", "ok"), ("PtyReady", "True", "Ready", "ok")]
WAITING: list[Row] = [UP[0], ("PtyReady", "Unknown", "Creating", "not yet")]


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        ("", READY, READY),  # first provisioning done in one write
        (PENDING, READY, READY),
        (FAILED, READY, PROVISIONING),  # a failed one shows its way back
        (SUSPENDED, READY, READY),
        (PROVISIONING, SUSPENDED, PROVISIONING),
        (READY, PENDING, PROVISIONING),
        ("Bogus", PROVISIONING, PROVISIONING),  # an unknown phase counts as none
        ("Bogus", READY, READY),
        (READY, FAILED, FAILED),
        (READY, READY, READY),
    ],
)
def test_step_takes_the_legal_way(current: str, target: str, expected: str) -> None:
    assert step(current, target) == expected


@pytest.mark.parametrize("current", [*PHASES, "Bogus"])
@pytest.mark.parametrize("target", PHASES[1:])
def test_step_never_raises_and_is_idempotent(current: str, target: str) -> None:
    got = step(current, target)
    start = current if current in TRANSITIONS else ""
    assert legal(start, got) or (got == READY and start in ("", PENDING))
    assert step(current, got) == got


def test_ready_summary() -> None:
    failure = Failure("CloneFailed", "git said no", "PVCsReady")
    assert ready_summary(UP, phase=FAILED, failure=failure) == (
        "Ready",
        "False",
        "CloneFailed",
        "git said no",
    )
    assert ready_summary(UP, phase=SUSPENDED, failure=None)[1:3] == ("False", "Suspended")
    assert ready_summary(WAITING, phase=PENDING, failure=None) == (
        "Ready",
        "Unknown",
        "Pending",
        "waiting for PtyReady",
    )
    assert ready_summary(WAITING, phase="", failure=None)[2] == "Pending"
    assert ready_summary(WAITING, phase=PROVISIONING, failure=None)[2] == "Provisioning"
    # all conditions up but the phase one step behind: not Ready yet (the operator's
    # copy said True here)
    assert ready_summary(UP, phase=PROVISIONING, failure=None) == (
        "Ready",
        "Unknown",
        "Provisioning",
        "all conditions are met; phase is Provisioning",
    )
    assert ready_summary(UP, phase=READY, failure=None) == (
        "Ready",
        "True",
        "Ready",
        "all conditions are met",
    )


def test_merge_keeps_the_transition_time_while_the_status_holds() -> None:
    old = (
        Condition("PtyReady", "Unknown", "Creating", "not yet", T0),
        Condition("NamespaceReady", "True", "Created", "ok", T0),
        Condition("Custom", "True", "Theirs", "another writer's", T0),
        Condition("RBACReady", "True", "Created", "no time recorded", None),
    )
    later = T0 + timedelta(minutes=5)
    rows: list[Row] = [
        ("NamespaceReady", "True", "Renamed", "reason and message changed"),
        ("PtyReady", "True", "Ready", "up"),
        ("RBACReady", "True", "Created", "no time recorded"),
    ]
    merged = merge_conditions(old, rows, later)
    assert [c.type for c in merged] == ["NamespaceReady", "PtyReady", "RBACReady", "Custom"]
    by_type = {c.type: c for c in merged}
    assert by_type["NamespaceReady"].last_transition_time == T0  # same status: kept
    assert by_type["NamespaceReady"].reason == "Renamed"
    assert by_type["PtyReady"].last_transition_time == later  # status changed
    assert by_type["RBACReady"].last_transition_time == later  # had none: now
    assert by_type["Custom"] == old[2]  # kept as it was, after ours


def test_next_status_is_a_fixed_point_once_settled() -> None:
    first = next_status(
        SandboxStatus(), UP, phase=READY, now=T0.replace(microsecond=123), generation=3
    )
    assert first.phase == READY and first.observed_generation == 3
    assert [c.type for c in first.conditions] == ["NamespaceReady", "PtyReady", "Ready"]
    assert all(c.last_transition_time == T0 for c in first.conditions)  # whole seconds
    again = next_status(first, UP, phase=READY, now=T0 + timedelta(hours=1), generation=3)
    assert again == first  # nothing to write


def test_next_status_steps_the_phase_and_puts_flags_after_ready() -> None:
    failed = SandboxStatus(phase=FAILED)
    flag: Row = ("StorageWithinQuota", "True", "WithinQuota", "1Gi of 5Gi")
    got = next_status(failed, UP, phase=READY, now=T0, generation=2, flags=(flag,))
    assert got.phase == PROVISIONING
    assert [c.type for c in got.conditions][-2:] == ["Ready", "StorageWithinQuota"]
    ready = got.condition("Ready")
    assert ready is not None and (ready.status, ready.reason) == ("Unknown", "Provisioning")
