"""Status projection, the phase table, the item shape and the document round trip."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from openova_sandbox.domain.errors import IllegalTransition, UnusableClaim
from openova_sandbox.domain.model import (
    Condition,
    ObjectMeta,
    Preview,
    Quota,
    Sandbox,
    SandboxSpec,
    SandboxStatus,
)
from openova_sandbox.domain.principal import principal_from_claims
from openova_sandbox.domain.status import check_transition, project_status, to_item


@pytest.mark.parametrize(
    ("phase", "status"),
    [
        ("", "pending"),
        ("Pending", "pending"),
        (" provisioning ", "pending"),
        ("Ready", "running"),
        ("READY", "running"),
        ("Suspended", "stopped"),
        ("Failed", "failed"),
        ("Exploded", "unknown"),
    ],
)
def test_projection(phase, status):
    assert project_status(phase) == status


def test_phases_only_move_forward():
    check_transition("", "Pending")
    check_transition("Pending", "Provisioning")
    check_transition("Provisioning", "Ready")
    check_transition("Ready", "Suspended")
    check_transition("Suspended", "Ready")
    check_transition("Ready", "Ready")
    for current, target in [("Ready", "Pending"), ("Provisioning", "Pending"), ("Failed", "Ready")]:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


def sample() -> Sandbox:
    created = datetime(2026, 5, 18, 6, 45, 5, tzinfo=UTC)
    return Sandbox(
        metadata=ObjectMeta(
            name="box",
            namespace="acme",
            uid="u-1",
            resource_version="7",
            generation=2,
            creation_timestamp=created,
            labels={"a": "b"},
            annotations={"catalyst.openova.io/sandbox-display-name": "My Box"},
            finalizers=("sandbox.openova.io/finalizer",),
            extra={"managedFields": [{"manager": "x"}]},
        ),
        spec=SandboxSpec(
            owner_email="dev@acme.com",
            org_slug="acme",
            quota=Quota(cpu="500m", memory="1Gi", storage="2Gi", concurrent_sessions=2),
            agent_catalogue=("aider", "opencode"),
            repos=("acme/site",),
            extra={"planId": "sandbox-pro", "idleScaling": {"enabled": True}},
        ),
        status=SandboxStatus(
            phase="Ready",
            conditions=(Condition("Ready", "True", "Ready", "", created),),
            sessions=2,
            storage_used="8.2Gi",
            previews=(Preview(3, "https://pr-3.example", "abc"),),
            observed_generation=2,
            extra={"workspaceNamespace": "sandbox-dev-at-acme-com"},
        ),
    )


def test_document_round_trip_keeps_unknown_fields():
    doc = sample().to_dict()
    assert doc["spec"]["planId"] == "sandbox-pro"
    assert doc["metadata"]["managedFields"] == [{"manager": "x"}]
    assert doc["status"]["workspaceNamespace"] == "sandbox-dev-at-acme-com"
    assert Sandbox.from_dict(doc) == sample()
    assert Sandbox.from_dict(doc).to_dict() == doc


def test_from_dict_and_to_dict_share_nothing_with_the_document():
    # from_dict copies only the fields it does not know (the known ones become new
    # values): a later change to the document must not reach the object, nor back
    doc = sample().to_dict()
    parsed = Sandbox.from_dict(doc)
    doc["metadata"]["managedFields"][0]["manager"] = "changed"
    doc["metadata"]["labels"]["a"] = "changed"
    doc["spec"]["idleScaling"]["enabled"] = False
    doc["status"]["conditions"][0]["status"] = "False"
    assert parsed == sample()
    again = parsed.to_dict()
    again["spec"]["idleScaling"]["enabled"] = False
    again["metadata"]["managedFields"].append({"manager": "y"})
    assert parsed == sample()


def test_item_shape():
    item = to_item(sample())
    assert list(item)[:6] == ["id", "name", "agent", "status", "createdAt", "repo"]
    assert item["name"] == "My Box"
    assert item["agent"] == "aider"
    assert item["status"] == "running"
    assert item["createdAt"] == "2026-05-18T06:45:05Z"
    assert item["sessions"] == 2
    assert item["storageUsed"] == "8.2Gi"
    assert "spend30d" not in item
    assert item["previews"] == [{"prNumber": 3, "url": "https://pr-3.example", "sha": "abc"}]
    assert item["conditions"][0]["lastTransitionTime"] == "2026-05-18T06:45:05Z"
    assert item["attachUrl"] == "/api/v1/sandbox/sessions/box/attach"
    assert "deletionTimestamp" not in item


@pytest.mark.parametrize("phase", ["Ready", "Provisioning", "Failed", "Suspended", ""])
def test_a_deleting_sandbox_is_stopping_whatever_its_phase(phase):
    marked = datetime(2026, 5, 18, 7, 0, 1, tzinfo=UTC)
    sb = sample()
    sb = replace(sb, status=replace(sb.status, phase=phase)).with_meta(deletion_timestamp=marked)
    item = to_item(sb)
    assert list(item)[:6] == ["id", "name", "agent", "status", "createdAt", "repo"]
    assert item["status"] == "stopping"
    assert item["deletionTimestamp"] == "2026-05-18T07:00:01Z"
    assert item.get("phase", "") == phase  # the raw phase is still reported


def test_only_realm_roles_and_tier_make_an_org_admin():
    # groups are read, but a group named org-admin is not the realm role
    grouped = principal_from_claims({"sub": "s", "org": "acme", "groups": ["org-admin"]})
    assert grouped.groups == ("org-admin",) and not grouped.is_org_admin
    # a top-level "roles" claim is not one the spec reads
    assert not principal_from_claims({"sub": "s", "roles": ["org-admin"]}).is_org_admin
    realm = {"sub": "s", "org_id": "acme", "realm_access": {"roles": ["org-admin"]}}
    assert principal_from_claims(realm).is_org_admin


def test_an_org_admin_needs_an_org():
    # issue 11: without an org the caller shares the default namespace with every other
    # org-less user; neither the role nor the tier administers it
    for claims in (
        {"sub": "s", "realm_access": {"roles": ["org-admin"]}},
        {"sub": "s", "org_id": "  ", "tier": "owner"},
    ):
        principal = principal_from_claims(claims)
        assert principal is not None and principal.org == ""
        assert not principal.is_org_admin


@pytest.mark.parametrize("claim", ["org_id", "org"])
@pytest.mark.parametrize(
    ("value", "kind"), [(["acme"], "list"), ({"id": "acme"}, "object"), (3, "number")]
)
def test_a_non_string_org_claim_is_refused(claim, value, kind):
    with pytest.raises(UnusableClaim) as refused:
        principal_from_claims({"sub": "s", claim: value, "realm_access": {"roles": ["org-admin"]}})
    assert refused.value.detail.startswith(f"the token's {claim} claim is a {kind}, not a string")
    # null is an absent claim
    assert principal_from_claims({"sub": "s", claim: None}).org == ""


def test_principal_from_claims():
    p = principal_from_claims(
        {"sub": "s", "org": "legacy", "realm_access": {"roles": ["org-admin"]}, "email": " a@b.c "}
    )
    assert p is not None
    assert p.org == "legacy"
    assert p.email == "a@b.c"
    assert p.is_org_admin
    q = principal_from_claims({"sub": "s", "org_id": "new", "org": "old", "tier": "Admin"})
    assert q is not None
    assert q.org == "new"
    assert q.is_org_admin
    assert principal_from_claims({"sub": "s", "tier": "pro"}).is_org_admin is False
    assert principal_from_claims({"email": "x"}) is None
    assert principal_from_claims({"sub": "  "}) is None
