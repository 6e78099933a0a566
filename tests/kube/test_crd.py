"""The CRD's schema, exercised: good Sandboxes pass, each broken field is rejected.

The schema is validated with ``jsonschema`` (the structural subset Kubernetes uses is
plain JSON Schema draft 4-ish; ``x-kubernetes-*`` keywords are ignored by the validator
and checked separately here).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CRD_PATH = Path(__file__).parents[2] / "deploy" / "crds" / "sandboxes.sandbox.openova.io.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def validator(crd: dict[str, Any]) -> jsonschema.Draft7Validator:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def good() -> dict[str, Any]:
    return {
        "apiVersion": "sandbox.openova.io/v1",
        "kind": "Sandbox",
        "metadata": {"name": "claude-code-1234abcd", "namespace": "acme"},
        "spec": {
            "owner": {"email": "dev@acme.com", "orgRef": {"slug": "acme"}},
            "quota": {"cpu": "4", "memory": "8Gi", "storage": "50Gi", "concurrentSessions": 3},
            "repos": [{"giteaRepo": "acme/web-app"}],
            "agentCatalogue": ["claude-code", "aider"],
            "previewDomain": "preview.acme.example.com",
            "planId": "sandbox-pro",
            "capabilities": ["git.*", "fs.read"],
            "idleScaling": {"enabled": True, "timeoutMinutes": 30},
            "futureField": {"kept": True},
        },
        "status": {
            "phase": "Ready",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllReady",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "sessions": 1,
            "storageUsed": "8.2Gi",
            "spend30d": "USD 42.10",
            "previews": [{"prNumber": 7, "url": "https://pr-7.preview.acme.example.com"}],
            "observedGeneration": 2,
            "lastActivityAt": "2026-01-01T00:00:00.123456Z",
        },
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """A copy of the good sample with ``path`` (dotted; ``-`` deletes) set to ``value``."""
    doc = good()
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value == "-":
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def test_crd_names_and_metadata_are_exact(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "sandboxes.sandbox.openova.io"
    assert crd["metadata"]["labels"] == {
        "app.kubernetes.io/name": "catalyst",
        "app.kubernetes.io/component": "sandbox",
    }
    spec = crd["spec"]
    assert spec["group"] == "sandbox.openova.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "Sandbox",
        "listKind": "SandboxList",
        "plural": "sandboxes",
        "singular": "sandbox",
        "shortNames": ["sb", "sbx"],
        "categories": ["catalyst", "openova", "sandbox"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    got = [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in columns]
    assert got == [
        ("Owner", ".spec.owner.email", 0),
        ("Org", ".spec.owner.orgRef.slug", 0),
        ("Sessions", ".status.sessions", 0),
        ("Storage", ".status.storageUsed", 0),
        ("Phase", ".status.phase", 0),  # shown by default (issue 13; the spec said 1)
        ("Age", ".metadata.creationTimestamp", 0),
    ]
    assert columns[-1]["type"] == "date"


def test_spec_and_status_preserve_unknown_fields(crd: dict[str, Any]) -> None:
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert props["spec"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["status"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["spec"]["required"] == ["owner", "quota"]


def test_good_sample_is_accepted(validator: jsonschema.Draft7Validator) -> None:
    errors = list(validator.iter_errors(good()))
    assert errors == []


def test_minimal_sample_is_accepted(validator: jsonschema.Draft7Validator) -> None:
    doc = good()
    doc["spec"] = {
        "owner": {"email": "a.b+c@x.io", "orgRef": {"slug": "abc"}},
        "quota": {"cpu": "500m", "memory": "512Mi", "storage": "1.5Gi", "concurrentSessions": 1},
    }
    del doc["status"]
    assert list(validator.iter_errors(doc)) == []


GOOD_VALUES = [
    ("spec.quota.cpu", "0.5"),
    ("spec.quota.cpu", "250m"),
    ("spec.quota.memory", "1024"),
    ("spec.quota.memory", "2Ti"),
    ("spec.quota.storage", "5.25Ki"),
    # decimal units are Kubernetes quantities too (issue 13: 1G was refused)
    ("spec.quota.memory", "1G"),
    ("spec.quota.storage", "50G"),
    ("spec.quota.concurrentSessions", 10),
    ("spec.owner.orgRef.slug", "a" + "b" * 31),
    ("spec.repos.0.giteaRepo", "my_org.x/Repo.Name-1"),
    ("spec.agentCatalogue", ["aider", "opencode", "qwen-code", "little-coder", "cursor-agent"]),
    ("spec.agentCatalogue", ["shell"]),
    ("spec.planId", "sandbox-free"),
    ("spec.planId", "sandbox-ent"),
    ("spec.idleScaling.timeoutMinutes", 1),
    ("spec.idleScaling", {}),
    ("status.phase", "Suspended"),
    ("status.conditions.0.status", "Unknown"),
]


@pytest.mark.parametrize(("path", "value"), GOOD_VALUES)
def test_boundary_values_are_accepted(
    validator: jsonschema.Draft7Validator, path: str, value: Any
) -> None:
    assert list(validator.iter_errors(with_change(path, value))) == []


BAD_VALUES = [
    ("spec.owner", "-"),
    ("spec.quota", "-"),
    ("spec.owner.email", "-"),
    ("spec.owner.email", "not-an-email"),
    ("spec.owner.email", 42),
    ("spec.owner.orgRef", "-"),
    ("spec.owner.orgRef.slug", "-"),
    ("spec.owner.orgRef.slug", "Acme"),
    ("spec.owner.orgRef.slug", "ab"),
    ("spec.owner.orgRef.slug", "1acme"),
    ("spec.owner.orgRef.slug", "a" + "b" * 32),
    ("spec.quota.cpu", "-"),
    ("spec.quota.cpu", "4 cores"),
    ("spec.quota.cpu", "4Gi"),
    ("spec.quota.cpu", 4),
    ("spec.quota.memory", "-"),
    ("spec.quota.memory", "8GB"),
    ("spec.quota.memory", "8gi"),
    ("spec.quota.storage", "-"),
    ("spec.quota.storage", "50GB"),
    ("spec.quota.concurrentSessions", "-"),
    ("spec.quota.concurrentSessions", 0),
    ("spec.quota.concurrentSessions", 11),
    ("spec.quota.concurrentSessions", "3"),
    ("spec.repos.0.giteaRepo", "Acme/web"),
    ("spec.repos.0.giteaRepo", "acme"),
    ("spec.repos.0.giteaRepo", "acme/web/app"),
    ("spec.repos.0.giteaRepo", "-"),
    ("spec.repos.0.giteaRepo", "a" * 64 + "/web"),
    ("spec.repos.0.giteaRepo", "acme/" + "r" * 101),
    ("spec.agentCatalogue", ["Claude-Code"]),
    ("spec.agentCatalogue", ["gpt"]),
    ("spec.previewDomain", "Bad_Domain!"),
    ("spec.planId", "sandbox-gold"),
    ("spec.idleScaling.enabled", "yes"),
    ("spec.idleScaling.timeoutMinutes", 0),
    ("status.phase", "Running"),
    ("status.conditions.0.status", "true"),
    ("status.conditions.0.type", "-"),
    ("status.sessions", -1),
]


@pytest.mark.parametrize(("path", "value"), BAD_VALUES)
def test_each_bad_field_is_rejected(
    validator: jsonschema.Draft7Validator, path: str, value: Any
) -> None:
    doc = with_change(path, value)
    errors = list(validator.iter_errors(doc))
    assert errors, f"{path}={value!r} was accepted"
    # the error points at the field we broke (or at its parent when it was removed)
    expected = [p for p in path.split(".") if p]
    if value == "-":
        expected = expected[:-1]
    where = [str(p) for p in errors[0].absolute_path]
    assert where[: len(expected)] == expected[: len(where)]


def test_unknown_fields_survive_validation(validator: jsonschema.Draft7Validator) -> None:
    doc = copy.deepcopy(good())
    doc["status"]["somethingNew"] = [1, 2, 3]
    assert list(validator.iter_errors(doc)) == []
