"""Label and field selectors, parsed the way the API server parses them.

Supported label forms: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k`` (exists) and ``!k`` (does not exist), comma-separated (all must hold). Field
selectors: ``metadata.name`` and ``metadata.namespace`` with ``=``/``==``/``!=``, which
is what controllers use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, str]], bool]

_SET_RE = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")


class SelectorError(ValueError):
    """The selector text cannot be parsed (the server answers 400 BadRequest)."""


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def _term(term: str) -> Predicate:
    match = _SET_RE.match(term)
    if match:
        key = match["key"]
        values = {v.strip() for v in match["values"].split(",") if v.strip()}
        if match["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in term:
            key, _, value = term.partition(op)
            key, value = key.strip(), value.strip()
            if not key or " " in key:
                raise SelectorError(f"invalid label selector term {term!r}")
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        key = term[1:].strip()
        return lambda labels: key not in labels
    if not term or " " in term:
        raise SelectorError(f"invalid label selector term {term!r}")
    return lambda labels: term in labels


def label_selector(text: str | None) -> Predicate:
    terms = [_term(t) for t in _split_terms(text or "")]
    return lambda labels: all(t(labels) for t in terms)


def field_selector(text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    checks: list[tuple[str, bool, str]] = []
    for term in _split_terms(text or ""):
        for op in ("!=", "==", "="):
            if op in term:
                key, _, value = term.partition(op)
                key = key.strip()
                if key not in ("metadata.name", "metadata.namespace"):
                    raise SelectorError(f'field label not supported: "{key}"')
                checks.append((key.split(".", 1)[1], op != "!=", value.strip()))
                break
        else:
            raise SelectorError(f"invalid field selector term {term!r}")

    def matches(obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return all((meta.get(k, "") == v) == want for k, want, v in checks)

    return matches
