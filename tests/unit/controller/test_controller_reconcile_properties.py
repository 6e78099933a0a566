"""Properties of the reconciler over generated sandboxes and observations."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from openova_sandbox.controller.reconcile import (
    AddFinalizer,
    CloneRepo,
    EnsureWorkspace,
    Observed,
    Plan,
    RemoveFinalizer,
    reconcile,
)
from openova_sandbox.domain.model import (
    CONDITION_TYPES,
    FINALIZER,
    Condition,
    ObjectMeta,
    Sandbox,
    SandboxSpec,
    SandboxStatus,
)
from openova_sandbox.domain.status import check_transition

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
ORDER = (*CONDITION_TYPES, "Ready")
REPOS = ("acme/app", "acme/lib", "acme/docs", "evil/app", "acme", "acme/..")
PHASES = ("", "Pending", "Provisioning", "Ready", "Suspended", "Failed")

times = st.one_of(
    st.none(),
    st.integers(min_value=-(10**6), max_value=10**6).map(lambda s: NOW + timedelta(seconds=s)),
)
conditions = st.lists(
    st.builds(
        Condition,
        type=st.sampled_from((*ORDER, "Other")),
        status=st.sampled_from(("True", "False", "Unknown")),
        reason=st.sampled_from(("", "X", "CloneFailed")),
        message=st.sampled_from(("", "m")),
        last_transition_time=times,
    ),
    max_size=8,
    unique_by=lambda c: c.type,
).map(tuple)


@st.composite
def sandboxes(draw: st.DrawFn) -> Sandbox:
    generation = draw(st.integers(min_value=1, max_value=4))
    return Sandbox(
        metadata=ObjectMeta(
            name=draw(st.sampled_from(("box", "a-b", ".."))),
            namespace="acme",
            resource_version="3",
            generation=generation,
            finalizers=draw(st.sampled_from(((), (FINALIZER,), ("other", FINALIZER)))),
            deletion_timestamp=draw(st.sampled_from((None, NOW))),
        ),
        spec=SandboxSpec(
            owner_email=draw(st.sampled_from(("dev@acme.com", "", "bad"))),
            org_slug=draw(st.sampled_from(("acme", "", "X"))),
            repos=tuple(draw(st.lists(st.sampled_from(REPOS), max_size=4))),
        ),
        status=SandboxStatus(
            phase=draw(st.sampled_from(PHASES)),
            conditions=draw(conditions),
            sessions=draw(st.integers(min_value=0, max_value=3)),
            observed_generation=draw(st.integers(min_value=0, max_value=generation)),
            last_activity_at=draw(times),
        ),
    )


@st.composite
def observations(draw: st.DrawFn) -> Observed:
    cloned = draw(st.frozensets(st.sampled_from(REPOS)))
    failed = draw(st.frozensets(st.sampled_from(REPOS)))
    return Observed(
        workspace_exists=draw(st.booleans()),
        cloned=cloned,
        clone_errors={r: "fatal: https://u:tok3n@h/x failed" for r in failed},
        terminal_serving=draw(st.booleans()),
        sessions=draw(st.integers(min_value=0, max_value=3)),
        last_activity=draw(times),
    )


def apply(sb: Sandbox, plan: Plan) -> Sandbox:
    finalizers = sb.metadata.finalizers
    for action in plan.actions:
        if isinstance(action, AddFinalizer):
            finalizers = (*finalizers, FINALIZER)
        elif isinstance(action, RemoveFinalizer):
            finalizers = tuple(f for f in finalizers if f != FINALIZER)
    sb = sb.with_meta(finalizers=finalizers)
    return sb.with_status(plan.status) if plan.status is not None else sb


def check_move(old: str, new: str) -> None:
    """A status write moves the phase one legal step, or (a first provisioning reaching
    Ready, every condition True) the legal way through Provisioning."""
    if new == "Ready" and old in ("", "Pending"):
        check_transition(old, "Provisioning")
        check_transition("Provisioning", new)
        return
    check_transition(old, new)


def store_actions(plan: Plan) -> tuple[object, ...]:
    return tuple(a for a in plan.actions if isinstance(a, AddFinalizer | RemoveFinalizer))


@settings(max_examples=400, deadline=None)
@given(sb=sandboxes(), obs=observations())
def test_applying_the_plan_reaches_a_fixpoint_within_three_writes(
    sb: Sandbox, obs: Observed
) -> None:
    if sb.deleting:
        return  # deletion ends with the object gone, covered by table tests
    current = sb
    for _ in range(3):
        plan = reconcile(current, obs, NOW)
        if plan.status is None and not store_actions(plan):
            break
        current = apply(current, plan)
    final = reconcile(current, obs, NOW + timedelta(minutes=7))
    assert final.status is None
    assert not store_actions(final)
    assert reconcile(current, obs, NOW) == final  # stable, whatever the clock says


@settings(max_examples=400, deadline=None)
@given(sb=sandboxes(), obs=observations())
def test_one_status_write_is_enough(sb: Sandbox, obs: Observed) -> None:
    """Applying a plan's status and reconciling again with the same observation changes
    nothing more: no intermediate phase needs a write of its own."""
    plan = reconcile(sb, obs, NOW)
    if plan.status is None:
        return
    after = reconcile(sb.with_status(plan.status), obs, NOW + timedelta(seconds=30))
    if after.status is not None:
        # only the legal stop on the way back to Pending of a sandbox that lost its
        # finalizer (Ready -> Provisioning), which the finalizer's write follows
        assert AddFinalizer() in plan.actions


@settings(max_examples=400, deadline=None)
@given(sb=sandboxes(), obs=observations())
def test_every_plan_keeps_the_lifecycle_rules(sb: Sandbox, obs: Observed) -> None:
    plan = reconcile(sb, obs, NOW)
    actions = plan.actions
    if AddFinalizer() in actions:
        # nothing but the empty folders of a sandbox with no status yet beside it
        assert actions[0] == AddFinalizer()
        assert actions[1:] in ((), (EnsureWorkspace(),))
        if actions[1:]:
            assert not sb.status.phase
            assert plan.status is None
    if RemoveFinalizer() in actions:
        assert actions[-1] == RemoveFinalizer()
    if any(isinstance(a, CloneRepo) for a in actions):
        assert FINALIZER in sb.metadata.finalizers
    if any(isinstance(a, CloneRepo | EnsureWorkspace) for a in actions):
        assert not sb.deleting
    for action in actions:
        if isinstance(action, CloneRepo):
            assert action.repo.startswith("acme/")
    if plan.status is None:
        return
    new = plan.status
    check_move(sb.status.phase if sb.status.phase in PHASES else "", new.phase)
    frozen = sb.status.phase == "Failed" and sb.status.observed_generation == sb.metadata.generation
    if frozen:  # a failed generation only updates its live counters
        assert replace(new, sessions=0, last_activity_at=None) == replace(
            sb.status, sessions=0, last_activity_at=None
        )
        return
    assert tuple(c.type for c in new.conditions[:7]) == ORDER
    ready = new.condition("Ready")
    assert ready is not None
    assert (ready.status == "True") == (new.phase == "Ready")
    if new.phase == "Failed":
        assert ready.status == "False"
        assert actions == ()
    old = {c.type: c for c in sb.status.conditions}
    for c in new.conditions:
        before = old.get(c.type)
        if before is not None and before.status == c.status and before.last_transition_time:
            assert c.last_transition_time == before.last_transition_time
        assert "tok3n" not in c.message
        if c.type in ORDER:
            assert c.last_transition_time is not None
    assert new.sessions == obs.sessions
    if sb.status.last_activity_at and new.last_activity_at:
        assert new.last_activity_at >= sb.status.last_activity_at


@settings(max_examples=200, deadline=None)
@given(sb=sandboxes(), obs=observations())
def test_reconcile_is_a_function_of_its_inputs(sb: Sandbox, obs: Observed) -> None:
    assert reconcile(sb, obs, NOW) == reconcile(replace(sb), replace(obs), NOW)
