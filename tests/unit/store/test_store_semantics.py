"""The pure document transitions both self-hosted backends apply (store/semantics.py)."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from openova_sandbox.domain.errors import Conflict, Invalid
from openova_sandbox.domain.model import ObjectMeta, Sandbox, SandboxSpec, SandboxStatus
from openova_sandbox.store import semantics as rules

NOW = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)


def sandbox(**meta: object) -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(name="alpha", namespace="team-a", **meta),  # type: ignore[arg-type]
        spec=SandboxSpec(owner_email="dev@acme.com", org_slug="acme"),
    )


def stored(**meta: object) -> dict:  # type: ignore[type-arg]
    return rules.created_document(sandbox(**meta), uid="u-1", version=5, now=NOW)


def test_created_document_sets_system_fields_and_drops_status() -> None:
    given = sandbox(uid="forged", resource_version="9", generation=4, deletion_timestamp=NOW)
    document = rules.created_document(
        given.with_status(SandboxStatus(phase="Ready")), uid="u-1", version=5, now=NOW
    )
    meta = document["metadata"]
    assert meta["uid"] == "u-1"
    assert meta["resourceVersion"] == "5"
    assert meta["generation"] == 1
    assert meta["creationTimestamp"] == "2026-05-04T03:02:01Z"
    assert "deletionTimestamp" not in meta
    assert document["status"] == SandboxStatus().to_dict()


def test_update_keeps_system_fields_and_status() -> None:
    base = stored()
    incoming = Sandbox.from_dict(base).with_meta(
        uid="other", generation=40, labels={"a": "b"}, creation_timestamp=None
    )
    incoming = incoming.with_status(SandboxStatus(phase="Ready"))
    document = rules.updated_document(base, incoming)
    assert document is not None
    assert document["metadata"]["uid"] == "u-1"
    assert document["metadata"]["generation"] == 1  # labels are not spec
    assert document["metadata"]["creationTimestamp"] == "2026-05-04T03:02:01Z"
    assert document["metadata"]["labels"] == {"a": "b"}
    assert document["status"] == base["status"]


def test_update_bumps_generation_on_spec_change_only() -> None:
    base = stored()
    current = Sandbox.from_dict(base)
    assert rules.updated_document(base, current) is None
    changed = replace(current, spec=replace(current.spec, repos=("acme/app",)))
    document = rules.updated_document(base, changed)
    assert document is not None
    assert document["metadata"]["generation"] == 2


def test_status_document_replaces_only_status() -> None:
    base = stored(labels={"x": "1"})
    current = Sandbox.from_dict(base)
    assert rules.status_document(base, current) is None
    attempt = current.with_meta(labels={"y": "2"}).with_status(SandboxStatus(phase="Pending"))
    document = rules.status_document(base, attempt)
    assert document is not None
    assert document["metadata"] == base["metadata"]
    assert document["status"]["phase"] == "Pending"


def test_marking_and_stamping_copy() -> None:
    base = stored(finalizers=("x/y",))
    marked = rules.marked_document(base, now=NOW)
    assert marked["metadata"]["deletionTimestamp"] == "2026-05-04T03:02:01Z"
    assert "deletionTimestamp" not in base["metadata"]
    assert rules.is_marked(marked) and rules.has_finalizers(marked)
    assert rules.version_of(rules.stamped(marked, 12)) == 12
    assert rules.version_of(marked) == 5


def test_transitions_share_nothing_with_the_stored_document() -> None:
    # they copy only what they keep of it; the memory store holds ``base`` itself
    base = stored(labels={"x": "1"}, finalizers=("x/y",))
    base["status"] = {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}
    base["kind2"] = {"nested": ["kept"]}
    snapshot = copy.deepcopy(base)
    current = Sandbox.from_dict(base)
    updated = rules.updated_document(base, current.with_meta(labels={"y": "2"}))
    status = rules.status_document(base, current.with_status(SandboxStatus(phase="Pending")))
    marked = rules.marked_document(base, now=NOW)
    for document in (updated, status, marked):
        assert document is not None
        assert list(document) == list(base)  # the stored order of the fields
        rules.stamp(document, 99)
        document["kind2"]["nested"].append("changed")
        document["metadata"]["finalizers"].append("changed")
        if "conditions" in document["status"]:
            document["status"]["conditions"][0]["status"] = "changed"
    assert base == snapshot
    assert rules.version_of(rules.stamped(base, 12)) == 12
    assert base == snapshot


def test_check_version() -> None:
    base = stored()
    rules.check_version(base, Sandbox.from_dict(base))
    with pytest.raises(Conflict, match='resourceVersion "4" is not the current "5"'):
        rules.check_version(base, sandbox(resource_version="4"))


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("0", 0), ("42", 42), (" 7 ", 7)])
def test_parse_version(raw: str | None, expected: int | None) -> None:
    assert rules.parse_version(raw) == expected


@pytest.mark.parametrize("raw", ["", "x", "-1", "1e3", "٣", "1.0"])
def test_parse_version_rejects(raw: str) -> None:
    with pytest.raises(Invalid) as caught:
        rules.parse_version(raw)
    assert caught.value.code == "invalid-resource-version"
    assert raw in caught.value.detail


def test_now_seconds_has_no_fraction() -> None:
    assert rules.now_seconds().microsecond == 0
