"""The operator against a real API server: create → children → Ready → delete.

If an operator is already deployed (``kubectl apply -k deploy/kubernetes``, its lease
``catalyst-system/sandbox-operator`` fresh), this test only observes it: that runs the
built image end to end. Otherwise it runs the operator in-process (``run_operator``,
leader election included, narrowed to the test's namespace).

Readiness of the terminal server needs its image to be pullable by the cluster (``kind
load docker-image``) and the PVCs to bind (kind's default ``standard`` storage class).
Ready is required (issue 13: a cluster that never runs the terminal is a failure);
``SANDBOX_RC_EXPECT_READY=0`` accepts ``PtyReady`` pending with a warning, for a cluster
that cannot pull the image, after proving every other condition.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Namespace, PersistentVolumeClaim

from openova_sandbox.config import load_settings
from openova_sandbox.controller.kube.leader import LEASE_NAME
from openova_sandbox.controller.kube.operator import run_operator

from .conftest import wait_until

pytestmark = pytest.mark.realcluster

SandboxResource = create_namespaced_resource("sandbox.openova.io", "v1", "Sandbox", "sandboxes")
READY_TIMEOUT = float(os.environ.get("SANDBOX_RC_READY_TIMEOUT", "240"))


def _deployed_operator_leads(cluster: Client) -> bool:
    try:
        lease = cluster.get(Lease, LEASE_NAME, namespace="catalyst-system")
    except ApiError:
        return False
    spec = lease.spec
    if spec is None or not spec.holderIdentity or spec.renewTime is None:
        return False
    return datetime.now(UTC) - spec.renewTime < timedelta(seconds=30)


@pytest.fixture
def operator(cluster: Client, test_namespace: str) -> Iterator[str]:
    """The operator acting on ``test_namespace``: the deployed one, or one run here."""
    # without the Gateway API the operator skips routes (RouteReady: Skipped)
    if _deployed_operator_leads(cluster):
        yield "deployed"
        return
    settings = dataclasses.replace(load_settings(), kube_control_plane_namespace=test_namespace)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    errors: list[BaseException] = []

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(
                run_operator(settings, namespace=test_namespace, metrics_port=None, stop_flag=stop)
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield "in-process"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert errors == []


def _conditions(obj: Any) -> dict[str, dict[str, Any]]:
    status = obj.get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def test_create_ready_delete(cluster: Client, test_namespace: str, operator: str) -> None:
    user = f"rc-{test_namespace[-6:]}"
    body = {
        "apiVersion": "sandbox.openova.io/v1",
        "kind": "Sandbox",
        "metadata": {"name": "rc", "namespace": test_namespace},
        "spec": {
            "owner": {"email": f"{user}@example.com", "orgRef": {"slug": "example"}},
            "quota": {"cpu": "1", "memory": "1Gi", "storage": "10Gi", "concurrentSessions": 1},
            "agentCatalogue": ["claude-code"],
            "repos": [],
        },
    }
    cluster.create(SandboxResource.from_dict(body))

    def read() -> dict[str, Any]:
        return dict(cluster.get(SandboxResource, "rc", namespace=test_namespace).to_dict())

    def workspace() -> str:
        return str((read().get("status") or {}).get("workspaceNamespace") or "")

    ws = wait_until(workspace, timeout=60, what=f"the {operator} operator to pick a namespace")
    wait_until(
        lambda: cluster.get(StatefulSet, "pty-server", namespace=ws),
        timeout=60,
        what="the terminal server StatefulSet",
    )
    assert cluster.get(ConfigMap, "sandbox-mcp-config", namespace=ws)
    assert cluster.get(PersistentVolumeClaim, "home", namespace=ws)

    settled = ("NamespaceReady", "RBACReady", "PVCsReady", "McpReady", "TokenReady")

    def others_true() -> bool:
        conditions = _conditions(read())
        return all(conditions.get(t, {}).get("status") == "True" for t in settled)

    wait_until(others_true, timeout=120, what=f"conditions {settled}")
    try:
        wait_until(
            lambda: read().get("status", {}).get("phase") == "Ready",
            timeout=READY_TIMEOUT,
            what="phase Ready",
            interval=3,
        )
    except AssertionError:
        pty = _conditions(read()).get("PtyReady", {})
        if os.environ.get("SANDBOX_RC_EXPECT_READY", "1") != "0":
            raise
        assert pty.get("status") == "Unknown", pty  # pending, not failed
        warnings.warn(
            f"PtyReady still pending ({pty.get('message')}): is the image loaded into "
            "the cluster and do PVCs bind? Accepted because SANDBOX_RC_EXPECT_READY=0.",
            stacklevel=1,
        )

    cluster.delete(SandboxResource, "rc", namespace=test_namespace)

    def gone() -> bool:
        try:
            read()
        except ApiError as exc:
            return exc.status.code == 404
        return False

    wait_until(gone, timeout=180, what="the Sandbox to be deleted (finalizer released)")
    with pytest.raises(ApiError) as info:
        cluster.get(Namespace, ws)
    assert info.value.status.code == 404
