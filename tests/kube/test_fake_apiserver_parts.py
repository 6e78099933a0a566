"""The fake API server's pure parts: patches, selectors, schema defaulting."""

from __future__ import annotations

from typing import Any

import pytest

from openova_sandbox.testing.kubeapi_patch import PatchError, json_patch, merge_patch
from openova_sandbox.testing.kubeapi_selectors import (
    SelectorError,
    field_selector,
    label_selector,
)
from openova_sandbox.testing.kubeapi_validation import apply_defaults

DOC = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"a": {"b": 2}}, {"a": {"b": 2, "c": [1, 2]}, "d": "x"}),
        ({"a": {"c": [3]}}, {"a": {"b": 1, "c": [3]}, "d": "x"}),  # lists are replaced
        ({"d": None}, {"a": {"b": 1, "c": [1, 2]}}),
        ({"e": {"f": None}}, {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {}}),
    ],
)
def test_merge_patch(patch: dict[str, Any], expected: dict[str, Any]) -> None:
    assert merge_patch(DOC, patch) == expected
    assert DOC == {"a": {"b": 1, "c": [1, 2]}, "d": "x"}  # the input is untouched


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([{"op": "add", "path": "/a/c/-", "value": 3}], {"a": {"b": 1, "c": [1, 2, 3]}, "d": "x"}),
        ([{"op": "add", "path": "/a/c/0", "value": 0}], {"a": {"b": 1, "c": [0, 1, 2]}, "d": "x"}),
        ([{"op": "remove", "path": "/a/b"}], {"a": {"c": [1, 2]}, "d": "x"}),
        ([{"op": "replace", "path": "/d", "value": "y"}], {"a": {"b": 1, "c": [1, 2]}, "d": "y"}),
        ([{"op": "move", "from": "/d", "path": "/a/d"}], {"a": {"b": 1, "c": [1, 2], "d": "x"}}),
        (
            [{"op": "copy", "from": "/a/b", "path": "/z"}],
            {"a": {"b": 1, "c": [1, 2]}, "d": "x", "z": 1},
        ),
        ([{"op": "test", "path": "/a/c", "value": [1, 2]}], DOC),
        ([{"op": "add", "path": "/a~1b", "value": 1}], {**DOC, "a/b": 1}),
    ],
)
def test_json_patch(ops: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    assert json_patch(DOC, ops) == expected


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/d", "value": "nope"}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "replace", "path": "/a/zz", "value": 1}],
        [{"op": "add", "path": "/a/c/9", "value": 1}],
        [{"op": "jump", "path": "/d"}],
        [{"op": "add", "path": "/d"}],
        {"op": "add"},
    ],
)
def test_json_patch_errors(ops: Any) -> None:
    with pytest.raises(PatchError):
        json_patch(DOC, ops)


LABELS = {"team": "web", "tier": "gold"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("team=web", True),
        ("team==web", True),
        ("team!=web", False),
        ("team in (api, web)", True),
        ("team notin (api,web)", False),
        ("tier", True),
        ("!tier", False),
        ("missing!=x", True),
        ("team=web,tier=silver", False),
        ("team in (web),!missing", True),
    ],
)
def test_label_selector(selector: str, matches: bool) -> None:
    assert label_selector(selector)(LABELS) is matches


def test_bad_selectors() -> None:
    for bad in ("team web", "=x"):
        with pytest.raises(SelectorError):
            label_selector(bad)
    with pytest.raises(SelectorError):
        field_selector("spec.x=1")
    only = field_selector("metadata.name=a,metadata.namespace!=b")
    assert only({"metadata": {"name": "a", "namespace": "c"}})
    assert not only({"metadata": {"name": "a", "namespace": "b"}})


def test_schema_defaults_fill_present_objects_only() -> None:
    schema = {
        "properties": {
            "spec": {
                "properties": {
                    "idle": {
                        "properties": {
                            "enabled": {"default": True},
                            "minutes": {"default": 30},
                        }
                    },
                    "items": {"items": {"properties": {"k": {"default": "v"}}}},
                }
            }
        }
    }
    obj: dict[str, Any] = {"spec": {"idle": {"minutes": 5}, "items": [{}, {"k": "w"}]}}
    apply_defaults(schema, obj)
    assert obj == {
        "spec": {"idle": {"enabled": True, "minutes": 5}, "items": [{"k": "v"}, {"k": "w"}]}
    }
    absent: dict[str, Any] = {"spec": {}}
    apply_defaults(schema, absent)
    assert absent == {"spec": {}}  # no parent is created
