"""Table tests for the pure reconciler: every phase, condition and failure rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from openova_sandbox.controller.reconcile import (
    ACTIVITY_RESOLUTION,
    WAIT_POLL_SECONDS,
    AddFinalizer,
    CloneRepo,
    EnsureWorkspace,
    Observed,
    Plan,
    RemoveFinalizer,
    RemoveWorkspace,
    StopTerminals,
    reconcile,
    reconcile_orphan,
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

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
ORDER = (*CONDITION_TYPES, "Ready")


def sandbox(
    *,
    email: str = "dev@acme.com",
    slug: str = "acme",
    repos: tuple[str, ...] = (),
    finalizer: bool = True,
    phase: str = "",
    generation: int = 1,
    observed_generation: int = 0,
    conditions: tuple[Condition, ...] = (),
    deleting: bool = False,
    namespace: str = "acme",
    name: str = "box",
    sessions: int = 0,
    last_activity: datetime | None = None,
    agents: tuple[str, ...] = ("claude-code",),
) -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(
            name=name,
            namespace=namespace,
            uid="u-1",
            resource_version="7",
            generation=generation,
            finalizers=(FINALIZER,) if finalizer else (),
            deletion_timestamp=NOW - timedelta(seconds=5) if deleting else None,
        ),
        spec=SandboxSpec(owner_email=email, org_slug=slug, repos=repos, agent_catalogue=agents),
        status=SandboxStatus(
            phase=phase,
            conditions=conditions,
            observed_generation=observed_generation,
            sessions=sessions,
            last_activity_at=last_activity,
        ),
    )


def ready_obs(*repos: str, **changes: object) -> Observed:
    base = Observed(workspace_exists=True, cloned=frozenset(repos), terminal_serving=True)
    return replace(base, **changes)  # type: ignore[arg-type]


def apply(sb: Sandbox, plan: Plan) -> Sandbox:
    """What the runner's store writes do with a plan (runtime actions aside)."""
    finalizers = sb.metadata.finalizers
    for action in plan.actions:
        if isinstance(action, AddFinalizer):
            finalizers = (*finalizers, FINALIZER)
        if isinstance(action, RemoveFinalizer):
            finalizers = tuple(f for f in finalizers if f != FINALIZER)
    sb = sb.with_meta(finalizers=finalizers)
    return sb.with_status(plan.status) if plan.status is not None else sb


def cond(plan: Plan, type_: str) -> Condition:
    assert plan.status is not None
    found = plan.status.condition(type_)
    assert found is not None, f"{type_} missing"
    return found


def test_a_new_sandbox_gets_the_finalizer_and_its_folders_and_no_status_yet() -> None:
    plan = reconcile(sandbox(finalizer=False, repos=("acme/app",)), Observed(), NOW)
    assert plan.actions == (AddFinalizer(), EnsureWorkspace())  # no clone before it
    assert plan.status is None  # the next pass says what is there
    assert plan.requeue_after == 0
    there = reconcile(sandbox(finalizer=False), ready_obs(), NOW)
    assert there.actions == (AddFinalizer(),)


def test_a_sandbox_with_a_phase_but_no_finalizer_gets_it_back_and_nothing_else() -> None:
    plan = reconcile(
        sandbox(finalizer=False, phase="Pending", repos=("acme/app",)), Observed(), NOW
    )
    assert plan.actions == (AddFinalizer(),)
    assert plan.status is not None
    assert plan.status.phase == "Pending"
    assert plan.status.observed_generation == 1
    assert plan.requeue_after == 0
    assert tuple(c.type for c in plan.status.conditions) == ORDER


def test_a_new_sandbox_with_nothing_to_clone_is_ready_in_its_first_status_write() -> None:
    new = sandbox(finalizer=False)
    first = reconcile(new, Observed(terminal_serving=True), NOW)
    assert first.actions == (AddFinalizer(), EnsureWorkspace())
    plan = reconcile(apply(new, first), ready_obs(), NOW)  # the folders are there now
    assert plan.actions == ()
    assert plan.status is not None and plan.status.phase == "Ready"
    assert all(c.status == "True" for c in plan.status.conditions)
    assert plan.requeue_after is None
    assert reconcile(apply(apply(new, first), plan), ready_obs(), NOW).empty


def test_a_new_sandbox_with_repos_announces_its_clones_before_they_run() -> None:
    new = sandbox(finalizer=False, repos=("acme/app",))
    first = apply(new, reconcile(new, Observed(terminal_serving=True), NOW))
    plan = reconcile(first, ready_obs(), NOW)
    assert plan.actions == (CloneRepo("acme/app"),)
    assert plan.status is not None and plan.status.phase == "Provisioning"
    assert cond(plan, "PVCsReady").reason == "Cloning"


def test_pending_with_finalizer_provisions_workspace_then_repos_in_order() -> None:
    sb = sandbox(phase="Pending", repos=("acme/app", "acme/lib", "acme/app"))
    plan = reconcile(sb, Observed(terminal_serving=True), NOW)
    assert plan.actions == (EnsureWorkspace(), CloneRepo("acme/app"), CloneRepo("acme/lib"))
    assert plan.status is not None
    assert plan.status.phase == "Provisioning"
    assert cond(plan, "NamespaceReady").status == "Unknown"
    assert cond(plan, "PVCsReady").reason == "Cloning"
    assert "acme/app, acme/lib" in cond(plan, "PVCsReady").message
    assert cond(plan, "Ready").status == "Unknown"
    assert cond(plan, "Ready").message == "waiting for NamespaceReady, PVCsReady"


def test_everything_observed_makes_the_sandbox_ready_with_every_condition_true() -> None:
    sb = sandbox(phase="Provisioning", repos=("acme/app",))
    plan = reconcile(sb, ready_obs("acme/app"), NOW)
    assert plan.actions == ()
    assert plan.status is not None
    assert plan.status.phase == "Ready"
    assert [c.type for c in plan.status.conditions] == list(ORDER)
    assert all(c.status == "True" for c in plan.status.conditions)
    reasons = {c.type: c.reason for c in plan.status.conditions}
    assert reasons["RBACReady"] == "LocalUser"
    assert reasons["PVCsReady"] == "ReposCloned"
    assert reasons["McpReady"] == reasons["TokenReady"] == "NotApplicable"
    assert all(c.last_transition_time == NOW for c in plan.status.conditions)
    assert plan.requeue_after is None


def test_no_repos_means_pvcs_ready_at_once() -> None:
    plan = reconcile(sandbox(phase="Provisioning"), ready_obs(), NOW)
    assert cond(plan, "PVCsReady").reason == "NoRepos"
    assert plan.status is not None and plan.status.phase == "Ready"


def test_pending_with_everything_in_place_goes_the_legal_way_to_ready_in_one_write() -> None:
    # the table needs Provisioning between Pending and Ready; provisioning is finished,
    # so that stop is behind the sandbox and the write records where it is now
    plan = reconcile(sandbox(phase="Pending"), ready_obs(), NOW)
    assert plan.status is not None
    assert plan.status.phase == "Ready"
    assert plan.requeue_after is None
    assert reconcile(apply(sandbox(phase="Pending"), plan), ready_obs(), NOW).empty


def test_pending_with_work_left_stops_at_provisioning() -> None:
    plan = reconcile(sandbox(phase="Pending"), ready_obs(terminal_serving=False), NOW)
    assert plan.status is not None and plan.status.phase == "Provisioning"


def test_an_up_to_date_ready_sandbox_yields_an_empty_plan() -> None:
    sb = sandbox(phase="Provisioning", repos=("acme/app",))
    ready = apply(sb, reconcile(sb, ready_obs("acme/app"), NOW))
    later = NOW + timedelta(hours=3)
    plan = reconcile(ready, ready_obs("acme/app"), later)
    assert plan.empty
    assert plan == Plan()


def test_waiting_for_the_terminal_server_polls() -> None:
    sb = sandbox(phase="Provisioning")
    plan = reconcile(sb, ready_obs(terminal_serving=False), NOW)
    assert plan.actions == ()
    assert plan.status is not None and plan.status.phase == "Provisioning"
    assert cond(plan, "PtyReady").status == "Unknown"
    assert cond(plan, "Ready").message == "waiting for PtyReady"
    assert plan.requeue_after == WAIT_POLL_SECONDS


def test_a_ready_sandbox_whose_workspace_vanished_is_repaired() -> None:
    sb = sandbox(phase="Provisioning", repos=("acme/app",))
    ready = apply(sb, reconcile(sb, ready_obs("acme/app"), NOW))
    plan = reconcile(ready, Observed(terminal_serving=True), NOW + timedelta(minutes=1))
    assert plan.actions == (EnsureWorkspace(), CloneRepo("acme/app"))
    assert plan.status is not None and plan.status.phase == "Provisioning"
    assert cond(plan, "NamespaceReady").last_transition_time == NOW + timedelta(minutes=1)
    # RBACReady never changed status, so it keeps its original transition time.
    assert cond(plan, "RBACReady").last_transition_time == NOW


@pytest.mark.parametrize(
    ("changes", "reason", "condition", "fragment"),
    [
        ({"email": ""}, "OwnerEmailMissing", "Ready", "spec.owner.email is required"),
        ({"email": "   "}, "OwnerEmailMissing", "Ready", "required"),
        ({"email": "not-an-email"}, "OwnerEmailInvalid", "Ready", "'not-an-email'"),
        ({"email": "a@b"}, "OwnerEmailInvalid", "Ready", "not an email"),
        ({"slug": ""}, "OwnerOrgRefMissing", "Ready", "is required"),
        ({"slug": "Acme"}, "OwnerOrgRefMissing", "Ready", "not a valid slug"),
        ({"slug": "ab"}, "OwnerOrgRefMissing", "Ready", "'ab'"),
        (
            {"repos": ("acme/ok", "evil/app")},
            "CrossOrgRepo",
            "PVCsReady",
            "'evil/app' belongs to org 'evil'",
        ),
        ({"repos": ("acme",)}, "ManifestRenderFailed", "PVCsReady", "<org>/<name>"),
        ({"repos": ("acme/..",)}, "ManifestRenderFailed", "PVCsReady", "'acme/..'"),
        ({"repos": ("acme/x\n",)}, "ManifestRenderFailed", "PVCsReady", "<org>/<name>"),
        ({"repos": ("acme/" + "r" * 256,)}, "ManifestRenderFailed", "PVCsReady", "100"),
        ({"repos": ("a" * 64 + "/x",)}, "ManifestRenderFailed", "PVCsReady", "63"),
        ({"namespace": ".."}, "ManifestRenderFailed", "NamespaceReady", "metadata.namespace"),
        ({"name": "a/b"}, "ManifestRenderFailed", "NamespaceReady", "metadata.name"),
    ],
)
@pytest.mark.parametrize("finalizer", [True, False])
def test_invalid_specs_fail_permanently_with_the_spec_reason(
    changes: dict[str, object], reason: str, condition: str, fragment: str, finalizer: bool
) -> None:
    sb = sandbox(finalizer=finalizer, **changes)  # type: ignore[arg-type]
    plan = reconcile(sb, Observed(terminal_serving=True), NOW)
    assert plan.actions == ()  # no finalizer, no workspace, no clone for a broken spec
    assert plan.status is not None
    assert plan.status.phase == "Failed"
    ready = cond(plan, "Ready")
    assert (ready.status, ready.reason) == ("False", reason)
    assert fragment in ready.message
    own = cond(plan, condition)
    assert (own.status, own.reason) == ("False", reason)
    assert tuple(c.type for c in plan.status.conditions) == ORDER
    # Permanent: the same generation is not looked at again, whatever the runtime sees.
    failed = apply(sb, plan)
    assert reconcile(failed, ready_obs(), NOW + timedelta(hours=1)).empty


def test_an_agent_that_cannot_start_fails_the_sandbox_on_pty_ready() -> None:
    sb = sandbox(phase="Ready")
    why = "agent 'claude-code' is not installed: 'claude' not found on PATH"
    plan = reconcile(sb, ready_obs(agent_error=why), NOW)
    assert plan.actions == ()
    assert plan.status is not None and plan.status.phase == "Failed"
    pty = cond(plan, "PtyReady")
    assert (pty.status, pty.reason, pty.message) == ("False", "AgentUnavailable", why)
    ready = cond(plan, "Ready")
    assert (ready.status, ready.reason, ready.message) == ("False", "AgentUnavailable", why)
    # the steps before it did happen: the waterfall marks only the agent's
    assert cond(plan, "NamespaceReady").status == "True"
    assert cond(plan, "PVCsReady").status == "True"


def test_an_agent_problem_waits_for_the_workspace_before_failing() -> None:
    sb = sandbox(phase="Pending")
    plan = reconcile(sb, Observed(terminal_serving=True, agent_error="gone"), NOW)
    assert plan.actions == (EnsureWorkspace(),)
    assert plan.status is not None and plan.status.phase == "Provisioning"


def test_agent_unavailable_is_looked_at_again_and_clears_when_the_agent_can_start() -> None:
    sb = sandbox(phase="Ready")
    failed = apply(sb, reconcile(sb, ready_obs(agent_error="not installed"), NOW))
    assert failed.status.phase == "Failed"
    # still broken: nothing to write (same message), not a permanent failure either
    assert reconcile(failed, ready_obs(agent_error="not installed"), NOW).empty
    # another reason is written
    moved = reconcile(failed, ready_obs(agent_error="exec format error"), NOW)
    assert moved.status is not None and cond(moved, "Ready").message == "exec format error"
    # installed since: Failed -> Provisioning -> Ready
    later = NOW + timedelta(minutes=1)
    step = apply(failed, reconcile(failed, ready_obs(), later))
    assert step.status.phase == "Provisioning"
    plan = reconcile(step, ready_obs(), later)
    assert plan.status is not None and plan.status.phase == "Ready"
    assert cond(plan, "PtyReady").reason == "Serving"


def test_other_failures_stay_permanent_whatever_the_agent_does() -> None:
    broken = sandbox(repos=("evil/app",))
    failed = apply(broken, reconcile(broken, Observed(), NOW))
    assert cond(Plan(status=failed.status), "Ready").reason == "CrossOrgRepo"
    assert reconcile(failed, ready_obs(agent_error="not installed"), NOW).empty


def test_a_clone_error_fails_the_sandbox_with_gits_message_scrubbed() -> None:
    message = (
        "fatal: repository 'https://bot:s3cr3t-T0ken@git.example/acme/app.git/' not found\n"
        "hint: see https://git.example/acme/app.git?access_token=abcdef123&x=1"
    )
    sb = sandbox(phase="Provisioning", repos=("acme/app", "acme/lib"))
    obs = Observed(
        workspace_exists=True,
        cloned=frozenset({"acme/lib"}),
        clone_errors={"acme/app": message},
        terminal_serving=True,
    )
    plan = reconcile(sb, obs, NOW)
    assert plan.actions == ()
    assert plan.status is not None and plan.status.phase == "Failed"
    pvcs = cond(plan, "PVCsReady")
    assert (pvcs.status, pvcs.reason) == ("False", "CloneFailed")
    assert "cloning acme/app failed: fatal: repository" in pvcs.message
    assert "not found" in pvcs.message
    assert "https://***@git.example/acme/app.git/" in pvcs.message
    assert "s3cr3t" not in pvcs.message and "abcdef123" not in pvcs.message
    assert cond(plan, "Ready").reason == "CloneFailed"
    assert cond(plan, "NamespaceReady").status == "True"


def test_a_clone_error_of_an_already_cloned_repo_is_ignored() -> None:
    obs = ready_obs("acme/app", clone_errors={"acme/app": "old failure"})
    plan = reconcile(sandbox(phase="Provisioning", repos=("acme/app",)), obs, NOW)
    assert plan.status is not None and plan.status.phase == "Ready"


def test_a_failed_sandbox_is_retried_when_its_spec_changes() -> None:
    broken = sandbox(repos=("evil/app",))
    failed = apply(broken, reconcile(broken, Observed(), NOW))
    assert failed.status.phase == "Failed"
    fixed = replace(
        failed,
        metadata=replace(failed.metadata, generation=2),
        spec=replace(failed.spec, repos=("acme/app",)),
    )
    plan = reconcile(fixed, Observed(terminal_serving=True), NOW + timedelta(minutes=5))
    assert plan.status is not None
    assert plan.status.phase == "Provisioning"
    assert plan.status.observed_generation == 2
    assert plan.actions == (EnsureWorkspace(), CloneRepo("acme/app"))
    # Ready went False -> Unknown: a transition, so its time moves.
    assert cond(plan, "Ready").last_transition_time == NOW + timedelta(minutes=5)


def test_a_failed_sandbox_without_finalizer_gets_it_when_fixed() -> None:
    broken = sandbox(finalizer=False, email="")
    failed = apply(broken, reconcile(broken, Observed(), NOW))
    fixed = replace(
        failed,
        metadata=replace(failed.metadata, generation=2),
        spec=replace(failed.spec, owner_email="dev@acme.com"),
    )
    plan = reconcile(fixed, Observed(), NOW)
    assert plan.actions == (AddFinalizer(),)
    assert plan.status is not None
    assert plan.status.phase == "Provisioning"  # Failed -> Pending is not a legal move


def test_deletion_stops_terminals_removes_the_workspace_and_releases_the_finalizer() -> None:
    sb = sandbox(phase="Ready", deleting=True)
    plan = reconcile(sb, ready_obs(sessions=2), NOW)
    assert plan.actions == (StopTerminals(), RemoveWorkspace(), RemoveFinalizer())
    assert plan.status is None


def test_deletion_without_a_workspace_skips_its_removal() -> None:
    plan = reconcile(sandbox(deleting=True), Observed(), NOW)
    assert plan.actions == (StopTerminals(), RemoveFinalizer())


def test_deletion_without_our_finalizer_is_none_of_our_business() -> None:
    assert reconcile(sandbox(deleting=True, finalizer=False), ready_obs(), NOW).empty


def test_deletion_wins_over_a_broken_spec() -> None:
    plan = reconcile(sandbox(deleting=True, email=""), ready_obs(), NOW)
    assert plan.actions[-1] == RemoveFinalizer()


def test_orphans_are_cleaned_up_only_where_something_is_left() -> None:
    assert reconcile_orphan(Observed()).actions == ()
    assert reconcile_orphan(Observed(workspace_exists=True, sessions=1)).actions == (
        StopTerminals(),
        RemoveWorkspace(),
    )


def _ready(**changes: object) -> Sandbox:
    sb = sandbox(phase="Provisioning", **changes)  # type: ignore[arg-type]
    return apply(sb, reconcile(sb, ready_obs(), NOW))


def test_sessions_follow_the_terminals() -> None:
    plan = reconcile(_ready(), ready_obs(sessions=2), NOW)
    assert plan.actions == ()
    assert plan.status is not None and plan.status.sessions == 2
    assert plan.status.phase == "Ready"
    assert plan.status.conditions == _ready().status.conditions


def test_last_activity_is_written_first_time_and_then_rate_limited() -> None:
    first = NOW + timedelta(seconds=1, microseconds=250)
    plan = reconcile(_ready(), ready_obs(last_activity=first), NOW)
    assert plan.status is not None and plan.status.last_activity_at == first
    seen = apply(_ready(), plan)
    soon = first + ACTIVITY_RESOLUTION - timedelta(seconds=1)
    assert reconcile(seen, ready_obs(last_activity=soon), NOW).empty
    later = first + ACTIVITY_RESOLUTION
    plan = reconcile(seen, ready_obs(last_activity=later), NOW)
    assert plan.status is not None and plan.status.last_activity_at == later
    # An older report (e.g. a restarted terminal server) never moves it back.
    assert reconcile(seen, ready_obs(last_activity=first - timedelta(days=1)), NOW).empty


def test_a_failed_sandbox_still_reports_sessions() -> None:
    sb = sandbox(email="")
    failed = apply(sb, reconcile(sb, Observed(), NOW))
    plan = reconcile(failed, Observed(sessions=1), NOW)
    assert plan.status is not None
    assert plan.status.sessions == 1
    assert plan.status.conditions == failed.status.conditions


def test_conditions_written_by_others_are_kept_after_ours() -> None:
    extra = Condition("Audited", "True", "Checked", "", NOW - timedelta(days=1))
    sb = sandbox(phase="Provisioning", conditions=(extra,))
    plan = reconcile(sb, ready_obs(), NOW)
    assert plan.status is not None
    assert plan.status.conditions[-1] == extra
    assert tuple(c.type for c in plan.status.conditions[:-1]) == ORDER


def test_transition_times_are_whole_seconds() -> None:
    plan = reconcile(sandbox(phase="Provisioning"), ready_obs(), NOW.replace(microsecond=999))
    assert plan.status is not None
    assert {c.last_transition_time for c in plan.status.conditions} == {NOW}


def test_an_unknown_stored_phase_is_treated_as_new() -> None:
    plan = reconcile(sandbox(phase="Exploded"), ready_obs(), NOW)
    assert plan.status is not None and plan.status.phase == "Ready"
    waiting = reconcile(sandbox(phase="Exploded"), ready_obs(terminal_serving=False), NOW)
    assert waiting.status is not None and waiting.status.phase == "Provisioning"
