"""The operator's informer cache (controller/kube/cache.py) over kopf's indices: what
a pass reads, and when it may read it."""

from __future__ import annotations

from typing import Any

import pytest

from openova_sandbox.controller.kube.cache import (
    NAMESPACE_INDEX,
    SANDBOX_INDEX,
    Freshness,
    InformerCache,
    child_index,
    same_version,
    versions,
)

KINDS = {"ConfigMap": "configmaps", "Secret": "secrets"}


def obj(kind: str, name: str, rv: str, **labels: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "resourceVersion": rv, "labels": labels}}


def indices() -> dict[str, dict[Any, list[dict[str, Any]]]]:
    """Shaped as kopf's: index name -> key -> the values stored under it."""
    return {
        SANDBOX_INDEX: {("acme", "alpha"): [obj("Sandbox", "alpha", "7")]},
        NAMESPACE_INDEX: {"sandbox-dev": [obj("Namespace", "sandbox-dev", "3")]},
        child_index("configmaps"): {
            "sandbox-dev": [
                obj("ConfigMap", "mcp", "4", sandbox="alpha"),
                obj("ConfigMap", "other", "5", sandbox="beta"),
            ]
        },
        child_index("secrets"): {},
    }


def test_reads_by_key_and_by_labels() -> None:
    cache = InformerCache(KINDS)
    assert not cache.ready
    cache.bind(indices())
    assert cache.ready
    sandbox = cache.sandbox(("acme", "alpha"))
    assert sandbox is not None and sandbox["metadata"]["resourceVersion"] == "7"
    assert cache.sandbox(("acme", "gone")) is None
    assert cache.namespace("sandbox-dev") is not None and cache.namespace("elsewhere") is None
    assert list(cache.children("sandbox-dev", {"sandbox": "alpha"})) == [("ConfigMap", "mcp")]
    assert len(cache.children("sandbox-dev", {})) == 2
    assert cache.children("nowhere", {}) == {}
    # a copy: a pass cannot change what the cache holds
    cache.children("sandbox-dev", {"sandbox": "alpha"})[("ConfigMap", "mcp")]["kind"] = "X"
    assert cache.children("sandbox-dev", {"sandbox": "alpha"})[("ConfigMap", "mcp")]["kind"] == (
        "ConfigMap"
    )
    cache.unbind()
    assert not cache.ready
    with pytest.raises(RuntimeError):
        cache.sandbox(("acme", "alpha"))


def test_not_ready_without_every_index() -> None:
    partial = indices()
    del partial[child_index("secrets")]
    cache = InformerCache(KINDS)
    cache.bind(partial)
    assert not cache.ready


def test_freshness_and_versions() -> None:
    fresh = Freshness()
    key = ("acme", "alpha")
    assert not fresh.stale(key)
    fresh.wrote(key)
    assert fresh.stale(key)
    fresh.agreed(key)
    assert not fresh.stale(key)
    a, b = obj("ConfigMap", "m", "4"), obj("ConfigMap", "m", "5")
    assert same_version(a, dict(a)) and not same_version(a, b) and not same_version(a, None)
    assert versions({"x": a}) == {"x": "4"}
