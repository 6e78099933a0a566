"""The storage quota in embedded mode (issue 12): the workspace's measured size becomes
``status.storageUsed`` and a ``StorageWithinQuota`` condition flags a sandbox past its
quota, without holding back Ready."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_controller_reconcile import NOW, apply, cond, ready_obs, sandbox

from openova_sandbox.controller.reconcile import reconcile, storage_quantity
from openova_sandbox.domain.model import Quota

GI = 1 << 30


def with_quota(storage: str):  # type: ignore[no-untyped-def]
    sb = sandbox(phase="Ready", observed_generation=1)
    return replace(sb, spec=replace(sb.spec, quota=Quota(storage=storage)))


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0"), (900, "900"), (1536, "1.5Ki"), (312 << 20, "312Mi"), (int(1.26 * GI), "1.3Gi")],
)
def test_sizes_as_quantities(size, text):
    assert storage_quantity(size) == text


def test_within_the_quota_the_usage_is_reported_and_ready_stays():
    plan = reconcile(with_quota("2Gi"), ready_obs(storage_used=GI), NOW)
    assert plan.status is not None and plan.status.storage_used == "1Gi"
    flag = cond(plan, "StorageWithinQuota")
    assert (flag.status, flag.reason) == ("True", "WithinQuota")
    assert flag.message == "the workspace uses 1Gi of 2Gi"
    assert plan.status.phase == "Ready" and cond(plan, "Ready").status == "True"


def test_past_the_quota_the_sandbox_is_flagged_not_stopped():
    plan = reconcile(with_quota("2Gi"), ready_obs(storage_used=3 * GI), NOW)
    assert plan.status is not None and plan.status.storage_used == "3Gi"
    flag = cond(plan, "StorageWithinQuota")
    assert (flag.status, flag.reason) == ("False", "StorageExceeded")
    assert "past its storage quota of 2Gi" in flag.message
    assert plan.status.phase == "Ready" and cond(plan, "Ready").status == "True"
    assert plan.actions == ()


def test_not_measured_yet_changes_nothing_and_a_measure_is_kept():
    sb = with_quota("2Gi")
    unmeasured = reconcile(sb, ready_obs(), NOW)
    assert unmeasured.status is None or unmeasured.status.condition("StorageWithinQuota") is None
    first = apply(sb, reconcile(sb, ready_obs(storage_used=GI), NOW))
    plan = reconcile(first, ready_obs(), NOW)  # the next look has no new measurement
    assert (plan.status or first.status).storage_used == "1Gi"


def test_a_small_growth_is_not_a_status_write():
    sb = with_quota("2Gi")
    settled = apply(sb, reconcile(sb, ready_obs(storage_used=GI), NOW))
    again = reconcile(settled, ready_obs(storage_used=GI + 4096), NOW)
    assert again.status is None
