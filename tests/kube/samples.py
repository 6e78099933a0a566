"""Sandboxes used by the operator tests (built with the domain model, as the store would)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from openova_sandbox.domain.model import Sandbox

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def sandbox(
    name: str = "claude-code-1234abcd",
    *,
    namespace: str = "acme",
    email: str = "dev@acme.com",
    org: str = "acme",
    repos: tuple[str, ...] = ("acme/web-app",),
    finalizers: tuple[str, ...] = (),
    status: dict[str, Any] | None = None,
    generation: int = 1,
    extra_spec: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
) -> Sandbox:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": "0b7f3f7e-5a0c-4c39-9f43-3a8f3d2f0c11",
        "resourceVersion": "7",
        "generation": generation,
        "creationTimestamp": "2026-01-01T11:00:00Z",
        "finalizers": list(finalizers),
        "annotations": annotations or {},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    spec: dict[str, Any] = {
        "owner": {"email": email, "orgRef": {"slug": org}},
        "quota": {"cpu": "4", "memory": "8Gi", "storage": "50Gi", "concurrentSessions": 3},
        "agentCatalogue": ["claude-code"],
        "repos": [{"giteaRepo": r} for r in repos],
        **(extra_spec or {}),
    }
    return Sandbox.from_dict(
        {
            "apiVersion": "sandbox.openova.io/v1",
            "kind": "Sandbox",
            "metadata": meta,
            "spec": spec,
            "status": status or {},
        }
    )
