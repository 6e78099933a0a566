"""The pure Kubernetes reconcile, by table: (sandbox, observed cluster, now) -> plan."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from openova_sandbox.controller.kube.names import hashed_namespace
from openova_sandbox.controller.kube.reconcile import (
    ANNOTATION_WAKE,
    STATUS_NAMESPACE,
    KubeObserved,
    KubePlan,
    candidate_namespaces,
    contains,
    reconcile,
)
from openova_sandbox.controller.kube.render import RenderConfig, render_children, render_namespace
from openova_sandbox.domain.model import FINALIZER, Sandbox, SandboxStatus

from .samples import NOW, sandbox

CONFIG = RenderConfig(git_base_url="https://gitea.example.com")
NS = "sandbox-dev-at-acme-com"
ORDER = [
    "NamespaceReady",
    "RBACReady",
    "PVCsReady",
    "PtyReady",
    "RouteReady",
    "McpReady",
    "TokenReady",
    "Ready",
]


def as_server(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as the API server would return it: with fields it adds."""
    out = copy.deepcopy(obj)
    out["metadata"].update(
        uid="u-" + obj["metadata"]["name"],
        resourceVersion="5",
        creationTimestamp="2026-01-01T11:00:00Z",
    )
    if obj["kind"] == "StatefulSet":
        out["spec"]["podManagementPolicy"] = "OrderedReady"
        out["status"] = {"replicas": 1, "readyReplicas": 0}
    return out


def cluster(sb: Sandbox, *, ready: int = 0, namespace: str = NS, **kw: Any) -> KubeObserved:
    ns = as_server(render_namespace(sb, namespace))
    children = {}
    for obj in render_children(sb, namespace, CONFIG):
        obj = as_server(obj)
        if obj["kind"] == "StatefulSet":
            obj["status"]["readyReplicas"] = ready
        children[(obj["kind"], obj["metadata"]["name"])] = obj
    return KubeObserved(namespaces={namespace: ns}, children=children, **kw)


def settled(sb: Sandbox, observed: KubeObserved, plan: KubePlan) -> Sandbox:
    """The sandbox after the glue carried out ``plan``'s finalizer and status parts."""
    if plan.add_finalizer:
        sb = sb.with_meta(finalizers=(*sb.metadata.finalizers, FINALIZER))
    if plan.status is not None:
        sb = sb.with_status(plan.status)
    return sb


def conditions(plan: KubePlan) -> list[tuple[str, str, str]]:
    assert plan.status is not None
    return [(c.type, c.status, c.reason) for c in plan.status.conditions]


def test_first_sight_adds_the_finalizer_and_records_the_namespace() -> None:
    plan = reconcile(sandbox(), KubeObserved(), NOW, CONFIG)
    assert plan.add_finalizer and not plan.apply
    assert plan.status is not None and plan.status.phase == "Pending"
    assert plan.status.extra[STATUS_NAMESPACE] == NS
    assert [c[0] for c in conditions(plan)] == ORDER
    assert plan.requeue_after == 0.0


def test_namespace_first_then_everything_else_in_order() -> None:
    sb = sandbox(finalizers=(FINALIZER,))
    first = reconcile(sb, KubeObserved(), NOW, CONFIG)
    assert [o["kind"] for o in first.apply] == ["Namespace"]
    assert first.status is not None and first.status.phase == "Provisioning"
    sb = settled(sb, KubeObserved(), first)
    ns = as_server(render_namespace(sb, NS))
    second = reconcile(sb, KubeObserved(namespaces={NS: ns}), NOW, CONFIG)
    assert [o["kind"] for o in second.apply] == [
        "ResourceQuota",
        "ServiceAccount",
        "RoleBinding",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "HTTPRoute",
        "NetworkPolicy",
    ]
    assert all(o["metadata"]["namespace"] == NS for o in second.apply)
    assert conditions(second)[0] == ("NamespaceReady", "True", "Created")
    assert conditions(second)[1][1] == "Unknown"


def test_waits_for_the_terminal_server_then_ready_then_quiet() -> None:
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS})
    waiting = reconcile(sb, cluster(sb, ready=0), NOW, CONFIG)
    assert waiting.apply == () and waiting.delete == ()
    assert waiting.status is not None and waiting.status.phase == "Provisioning"
    assert ("PtyReady", "Unknown", "Creating") in conditions(waiting)
    assert waiting.requeue_after == 5.0
    sb = settled(sb, cluster(sb), waiting)
    ready = reconcile(sb, cluster(sb, ready=1), NOW + timedelta(seconds=5), CONFIG)
    assert ready.status is not None and ready.status.phase == "Ready"
    assert [c[1] for c in conditions(ready)] == ["True"] * len(ORDER)
    assert [c[0] for c in conditions(ready)] == ORDER
    sb = settled(sb, cluster(sb, ready=1), ready)
    again = reconcile(sb, cluster(sb, ready=1), NOW + timedelta(seconds=10), CONFIG)
    assert again.empty  # a settled sandbox costs no writes


def test_transition_times_move_only_on_change() -> None:
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS})
    first = reconcile(sb, cluster(sb), NOW, CONFIG)
    sb = settled(sb, cluster(sb), first)
    later = NOW + timedelta(minutes=1)
    second = reconcile(sb, cluster(sb, ready=1), later, CONFIG)
    assert second.status is not None
    times = {c.type: c.last_transition_time for c in second.status.conditions}
    assert times["NamespaceReady"] == NOW
    assert times["PtyReady"] == later


def test_drift_is_repaired_and_server_fields_are_ignored() -> None:
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS})
    observed = cluster(sb, ready=1)
    children = dict(observed.children)
    quota = copy.deepcopy(children[("ResourceQuota", "sandbox-quota")])
    quota["spec"]["hard"]["limits.cpu"] = "64"
    children[("ResourceQuota", "sandbox-quota")] = quota
    del children[("ConfigMap", "sandbox-mcp-config")]
    plan = reconcile(sb, replace(observed, children=children), NOW, CONFIG)
    assert sorted(o["kind"] for o in plan.apply) == ["ConfigMap", "ResourceQuota"]


@pytest.mark.parametrize(
    ("kwargs", "reason", "condition"),
    [
        ({"email": ""}, "OwnerEmailMissing", "Ready"),
        ({"email": "not-an-email"}, "OwnerEmailInvalid", "Ready"),
        ({"org": ""}, "OwnerOrgRefMissing", "Ready"),
        ({"repos": ("other/web",)}, "CrossOrgRepo", "PVCsReady"),
        ({"repos": ("acme/Web", "acme/web")}, "ManifestRenderFailed", "PVCsReady"),
    ],
)
def test_invalid_specs_fail_permanently(
    kwargs: dict[str, Any], reason: str, condition: str
) -> None:
    sb = sandbox(**kwargs)
    plan = reconcile(sb, KubeObserved(), NOW, CONFIG)
    assert not plan.add_finalizer and not plan.apply
    assert plan.status is not None and plan.status.phase == "Failed"
    rows = {c[0]: c for c in conditions(plan)}
    assert rows[condition][1:] == ("False", reason)
    assert rows["Ready"][1:] == ("False", reason)
    assert [c[0] for c in conditions(plan)] == ORDER
    failed = sb.with_status(plan.status)
    assert reconcile(failed, KubeObserved(), NOW, CONFIG).empty  # nothing retried
    fixed = sandbox(generation=2, status=failed.status.to_dict())
    retry = reconcile(fixed, KubeObserved(), NOW, CONFIG)
    assert retry.add_finalizer and retry.status is not None
    assert retry.status.phase == "Provisioning"  # Failed may only move to Provisioning


def test_a_second_sandbox_of_the_owner_gets_a_hashed_namespace() -> None:
    first, second = sandbox(name="one"), sandbox(name="two")
    held = as_server(render_namespace(first, NS))
    observed = KubeObserved(namespaces={NS: held})
    plan = reconcile(second, observed, NOW, CONFIG)
    assert plan.status is not None
    assert plan.status.extra[STATUS_NAMESPACE] == hashed_namespace(second)
    assert NS in candidate_namespaces(second)
    # a racing pair that both recorded the plain name: the one not holding it moves
    raced = sandbox(name="two", finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS})
    moved = reconcile(raced, observed, NOW, CONFIG)
    assert [o["metadata"]["name"] for o in moved.apply] == [hashed_namespace(second)]


def test_removed_repo_volume_is_deleted() -> None:
    before = sandbox(
        finalizers=(FINALIZER,), repos=("acme/web", "acme/api"), status={STATUS_NAMESPACE: NS}
    )
    observed = cluster(before, ready=1)
    after = sandbox(finalizers=(FINALIZER,), repos=("acme/web",), status={STATUS_NAMESPACE: NS})
    plan = reconcile(after, observed, NOW, CONFIG)
    assert [r["name"] for r in plan.delete] == ["repo-api"]
    assert [o["kind"] for o in plan.apply] == ["StatefulSet"]  # the mount goes too


def test_deletion_removes_the_namespace_then_the_finalizer() -> None:
    sb = sandbox(finalizers=(FINALIZER,), deleting=True, status={STATUS_NAMESPACE: NS})
    observed = cluster(sb, ready=1)
    plan = reconcile(sb, observed, NOW, CONFIG)
    assert [(r["kind"], r["name"]) for r in plan.delete] == [("Namespace", NS)]
    assert not plan.remove_finalizer and plan.requeue_after
    terminating = copy.deepcopy(observed.namespaces[NS])
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    waiting = reconcile(sb, KubeObserved(namespaces={NS: terminating}), NOW, CONFIG)
    assert waiting.delete == () and not waiting.remove_finalizer
    gone = reconcile(sb, KubeObserved(), NOW, CONFIG)
    assert gone.remove_finalizer and gone.delete == ()
    others = sandbox(name="other", finalizers=(FINALIZER,), deleting=True)
    assert reconcile(others, observed, NOW, CONFIG).remove_finalizer  # not its namespace
    assert reconcile(sandbox(deleting=True), observed, NOW, CONFIG).empty


def _ready_sandbox(**kw: Any) -> tuple[Sandbox, KubeObserved]:
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS}, **kw)
    plan = reconcile(sb, cluster(sb, ready=1), NOW, CONFIG)
    # everything is there on first sight: "" -> Ready in one write (the status kernel's
    # rule for a sandbox provisioned for the first time, as in embedded mode)
    assert plan.status is not None and plan.status.phase == "Ready"
    assert plan.requeue_after != 0.0
    return sb.with_status(replace(plan.status, last_activity_at=NOW)), cluster(sb, ready=1)


def test_idle_sandbox_scales_to_zero_and_wakes_on_attach() -> None:
    sb, observed = _ready_sandbox()
    early = reconcile(sb, observed, NOW + timedelta(minutes=29), CONFIG)
    assert early.apply == ()
    late = NOW + timedelta(minutes=31)
    plan = reconcile(sb, observed, late, CONFIG)
    (sts,) = plan.apply
    assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == 0
    assert plan.status is not None and plan.status.phase == "Suspended"
    assert ("PtyReady", "False", "Suspended") in conditions(plan)
    suspended = sb.with_status(plan.status)
    scaled = dict(observed.children)
    scaled[("StatefulSet", "pty-server")] = as_server(sts)
    asleep = replace(observed, children=scaled)
    assert reconcile(suspended, asleep, late, CONFIG).empty
    woken = suspended.with_meta(annotations={ANNOTATION_WAKE: "2026-01-01T13:00:00Z"})
    wake = reconcile(woken, asleep, late, CONFIG)
    (sts,) = wake.apply
    assert sts["spec"]["replicas"] == 1
    # the StatefulSet still reports 0 ready: the sandbox waits in Provisioning for it
    assert wake.status is not None and wake.status.phase == "Provisioning"
    assert ("PtyReady", "Unknown", "Creating") in conditions(wake)


def test_viewers_or_disabled_idle_scaling_keep_it_up() -> None:
    sb, observed = _ready_sandbox()
    late = NOW + timedelta(hours=2)
    watched = reconcile(sb, replace(observed, viewers_attached=True), late, CONFIG)
    assert watched.apply == ()
    sb2, observed2 = _ready_sandbox(extra_spec={"idleScaling": {"enabled": False}})
    assert reconcile(sb2, observed2, late, CONFIG).apply == ()
    sb3, observed3 = _ready_sandbox(extra_spec={"idleScaling": {"timeoutMinutes": 120}})
    assert reconcile(sb3, observed3, NOW + timedelta(minutes=100), CONFIG).apply == ()


def test_contains_ignores_server_fields_but_not_changes() -> None:
    desired = {"a": {"b": [1, {"c": 2}]}, "d": "x"}
    assert contains({"a": {"b": [1, {"c": 2, "z": 0}], "y": 1}, "d": "x", "e": 3}, desired)
    assert not contains({"a": {"b": [1, {"c": 3}]}, "d": "x"}, desired)
    assert not contains({"a": {"b": [1]}, "d": "x"}, desired)
    assert not contains(None, desired)


def test_status_keeps_unknown_fields() -> None:
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS, "future": {"x": 1}})
    plan = reconcile(sb, cluster(sb, ready=1), NOW, CONFIG)
    assert plan.status is not None and plan.status.extra["future"] == {"x": 1}
    assert isinstance(plan.status, SandboxStatus)


def test_a_failed_idle_probe_is_unknown_never_idle() -> None:
    sb, observed = _ready_sandbox()
    late = NOW + timedelta(minutes=31)  # the last activity on record is older than that
    unanswered = replace(observed, probe_failed=True)
    assert reconcile(sb, unanswered, late, CONFIG).apply == ()
    # once the probe answers again (and reports nothing newer) the timeout applies
    (sts,) = reconcile(sb, replace(observed, probed=True), late, CONFIG).apply
    assert sts["spec"]["replicas"] == 0


def test_no_reported_activity_never_suspends() -> None:
    sb, observed = _ready_sandbox()
    unknown = sb.with_status(replace(sb.status, last_activity_at=None))
    assert reconcile(unknown, observed, NOW + timedelta(days=3), CONFIG).apply == ()


def test_a_stale_wake_request_does_not_wake_and_a_fresh_one_counts_as_activity() -> None:
    sb, observed = _ready_sandbox()
    late = NOW + timedelta(minutes=31)
    plan = reconcile(sb, observed, late, CONFIG)
    assert plan.status is not None and plan.status.phase == "Suspended"
    stale = sb.with_status(plan.status).with_meta(
        annotations={ANNOTATION_WAKE: "2026-01-01T12:10:00Z"}  # before the suspension
    )
    (sts,) = reconcile(stale, observed, late, CONFIG).apply
    assert sts["spec"]["replicas"] == 0
    # Ready again after a wake at 13:00: idle only 30 minutes after the wake
    woken = sb.with_meta(annotations={ANNOTATION_WAKE: "2026-01-01T13:00:00Z"})
    assert reconcile(woken, observed, NOW + timedelta(minutes=80), CONFIG).apply == ()
    (sts,) = reconcile(woken, observed, NOW + timedelta(minutes=91), CONFIG).apply
    assert sts["spec"]["replicas"] == 0


def test_claims_beyond_the_storage_quota_fail_with_quota_exceeded() -> None:
    small = {"quota": {"cpu": "1", "memory": "1Gi", "storage": "8Gi", "concurrentSessions": 1}}
    sb = sandbox(repos=("acme/web-app",), extra_spec=small)  # 5Gi + 5Gi home > 8Gi
    plan = reconcile(sb, KubeObserved(), NOW, CONFIG)
    assert plan.status is not None and plan.status.phase == "Failed"
    ready = plan.status.condition("Ready")
    assert ready is not None and ready.reason == "QuotaExceeded"
    assert "quota.storage 8Gi" in ready.message
    assert ("PVCsReady", "False", "QuotaExceeded") in conditions(plan)
    assert plan.apply == () and not plan.add_finalizer
    # the same sandbox without the repo fits (home only)
    fits = sandbox(repos=(), extra_spec=small)
    assert reconcile(fits, KubeObserved(), NOW, CONFIG).status.phase != "Failed"


def _pod(**clone_status: Any) -> dict[str, Any]:
    entry = {"name": "git-clone", **clone_status}
    return {"status": {"initContainerStatuses": [entry]}}


def test_a_failed_clone_container_fails_the_sandbox_until_the_spec_changes() -> None:
    sb = sandbox(finalizers=(FINALIZER,), status={STATUS_NAMESPACE: NS})
    failing = _pod(
        state={"terminated": {"exitCode": 128, "message": "fatal: https://u:tok@h/r.git"}}
    )
    plan = reconcile(sb, replace(cluster(sb, ready=0), pods=(failing,)), NOW, CONFIG)
    assert plan.status is not None and plan.status.phase == "Failed"
    ready = plan.status.condition("Ready")
    assert ready is not None and ready.reason == "CloneFailed"
    assert ready.message == "git clone exited with 128: fatal: https://***@h/r.git"
    assert ("PVCsReady", "False", "CloneFailed") in conditions(plan)
    # permanent for this generation
    failed = sb.with_status(plan.status)
    assert reconcile(failed, cluster(failed, ready=0), NOW, CONFIG).empty


def test_running_or_retrying_clones_are_not_failures() -> None:
    from openova_sandbox.controller.kube.reconcile import clone_failure

    assert clone_failure([]) is None
    assert clone_failure([_pod(state={"running": {}})]) is None
    assert clone_failure([_pod(state={"terminated": {"exitCode": 0}})]) is None
    other = {
        "status": {
            "initContainerStatuses": [{"name": "other", "state": {"terminated": {"exitCode": 1}}}]
        }
    }
    assert clone_failure([other]) is None
    retried = _pod(state={"waiting": {}}, lastState={"terminated": {"exitCode": 1}})
    failure = clone_failure([retried])
    assert failure is not None and failure.message == "git clone exited with 1"
