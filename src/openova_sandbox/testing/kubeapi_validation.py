"""What the fake API server checks on every write, as a real one would (422 Invalid).

Object names (RFC 1123 subdomain; label for namespaces), label keys and values,
ownerReferences' required fields, and — for custom resources — the CRD's
``openAPIV3Schema`` after its ``default:`` values are filled in.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from .kubeapi_resources import JSON, ResourceType

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")


def validation_causes(rt: ResourceType, obj: JSON) -> list[str]:
    """The reasons ``obj`` is invalid (empty when it is valid); fills CRD defaults."""
    meta = obj["metadata"]
    name = meta.get("name", "")
    causes: list[str] = []
    pattern = _LABEL if rt.plural == "namespaces" else _SUBDOMAIN
    if not pattern.match(name) or len(name) > (63 if rt.plural == "namespaces" else 253):
        causes.append(
            f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 '
            f"{'label' if rt.plural == 'namespaces' else 'subdomain'} must consist of "
            "lower case alphanumeric characters, '-' or '.'"
        )
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label_name = str(key).rpartition("/")
        if not _LABEL_NAME.match(label_name) or (prefix and not _SUBDOMAIN.match(prefix)):
            causes.append(f'metadata.labels: Invalid value: "{key}": name part must be valid')
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            causes.append(
                f'metadata.labels: Invalid value: "{value}": must be 63 characters or less '
                "and consist of alphanumerics, '-', '_' or '.'"
            )
    for index, owner in enumerate(meta.get("ownerReferences") or []):
        for required in ("apiVersion", "kind", "name", "uid"):
            if not isinstance(owner, dict) or not owner.get(required):
                causes.append(f"metadata.ownerReferences[{index}].{required}: Required value")
    if rt.schema is not None:
        apply_defaults(rt.schema, obj)
        causes.extend(_schema_errors(rt.schema, obj))
    return causes


def apply_defaults(schema: Mapping[str, Any], value: Any) -> None:
    """Fill ``default:`` values of a structural schema into ``value`` in place, the way
    the API server does: only inside objects that are present, never creating parents."""
    if isinstance(value, dict):
        for key, prop in (schema.get("properties") or {}).items():
            if not isinstance(prop, Mapping):
                continue
            if key not in value and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                apply_defaults(prop, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            apply_defaults(schema["items"], item)


def _schema_errors(schema: Mapping[str, Any], obj: JSON) -> list[str]:
    import jsonschema  # type: ignore[import-untyped]

    validator = jsonschema.Draft7Validator(
        _strip_metadata(schema), format_checker=jsonschema.FormatChecker()
    )
    out = []
    for error in validator.iter_errors(obj):
        path = ".".join(str(p) for p in error.absolute_path) or "<root>"
        out.append(f"{path}: Invalid value: {error.message}")
    return out


def _strip_metadata(schema: Mapping[str, Any]) -> JSON:
    """The CRD schema without constraints on ``metadata`` (the server owns it)."""
    out = copy.deepcopy(dict(schema))
    props = out.get("properties")
    if isinstance(props, dict) and "metadata" in props:
        props["metadata"] = {"type": "object"}
    return out
