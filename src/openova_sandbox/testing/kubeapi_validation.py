"""What the fake API server checks on every write, as a real one would (422 Invalid).

Object names (RFC 1123 subdomain; label for namespaces), label keys and values,
ownerReferences' required fields, and — for custom resources — the CRD's
``openAPIV3Schema``: unknown fields are pruned where the schema does not preserve them,
``default:`` values filled in, then the schema and its CEL rules
(``x-kubernetes-validations``, with ``oldSelf`` on updates; evaluated with cel-python,
which lacks Kubernetes' own CEL libraries such as ``quantity()``) are checked.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from typing import Any

from .kubeapi_resources import JSON, ResourceType

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")


def validation_causes(rt: ResourceType, obj: JSON, old: JSON | None = None) -> list[str]:
    """The reasons ``obj`` is invalid (empty when it is valid); prunes unknown fields and
    fills CRD defaults. ``old``: the stored object an update replaces."""
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
        prune(rt.schema, obj, top=True)
        apply_defaults(rt.schema, obj)
        schema_errors = _schema_errors(rt.schema, obj)
        causes.extend(schema_errors)
        if not schema_errors:  # the server runs rules on schema-valid objects only
            causes.extend(rule_causes(rt.schema, obj, old, ""))
    return causes


def prune(schema: Mapping[str, Any], value: Any, *, top: bool = False) -> None:
    """Drop fields a structural schema does not declare, in place, as the API server
    does on every write: not below ``x-kubernetes-preserve-unknown-fields``, never in
    ``metadata`` (the server owns it)."""
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        if isinstance(props, Mapping) and not schema.get("x-kubernetes-preserve-unknown-fields"):
            for key in list(value):
                if key not in props and not (top and key == "metadata"):
                    del value[key]
        for key, item in value.items():
            if top and key == "metadata":
                continue
            sub = props.get(key) if isinstance(props, Mapping) else None
            if sub is None and isinstance(additional, Mapping):
                sub = additional
            if isinstance(sub, Mapping):
                prune(sub, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            prune(schema["items"], item)


def rule_causes(schema: Mapping[str, Any], value: Any, old: Any, path: str) -> list[str]:
    """Every ``x-kubernetes-validations`` rule that ``value`` breaks, depth first. A rule
    naming ``oldSelf`` (a transition rule) runs only on updates where the old object
    has the field too, as on a real server."""
    causes: list[str] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        expression = str(rule["rule"])
        if "oldSelf" in expression and old is None:
            continue
        if not _cel_true(expression, value, old):
            message = rule.get("message") or f"failed rule: {expression}"
            causes.append(f"{path or '<root>'}: Invalid value: {message}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value and isinstance(sub, Mapping) and key != "metadata":
                before = old.get(key) if isinstance(old, dict) else None
                causes.extend(rule_causes(sub, value[key], before, f"{path}.{key}".lstrip(".")))
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            causes.extend(rule_causes(schema["items"], item, None, f"{path}[{index}]"))
    return causes


def _cel_true(expression: str, value: Any, old: Any) -> bool:
    import celpy
    from celpy.adapter import json_to_cel

    program = _compiled(expression)
    activation = {"self": json_to_cel(value)}
    if old is not None:
        activation["oldSelf"] = json_to_cel(old)
    try:
        result = program.evaluate(activation)
    except Exception:  # an evaluation error fails the rule, as on a server
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


@functools.lru_cache(maxsize=256)
def _compiled(expression: str) -> Any:
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(expression))


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
