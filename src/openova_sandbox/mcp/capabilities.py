"""Which MCP tools a sandbox's token may call: the org's plan and the sandbox's own
``spec.capabilities`` (sandbox-resource.md), both lists of patterns. Pure: no I/O.

A pattern is a tool or capability name (``session.whoami``, ``secrets.read``), a family
wildcard (``workspace.*`` — every name under ``workspace.``) or ``*`` (everything). A name
is allowed when the plan allows it and, if the sandbox lists capabilities, the sandbox
does too: a sandbox can narrow its plan, never widen it.

Families (issue 14): ``session``, ``sandbox``, ``workspace``, ``k8s.read``, ``secrets``,
``preview``, ``usage``. Capabilities that are not tools use the same names: ``secrets.read``
lets ``secrets.get`` return values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

FAMILIES = ("session", "sandbox", "workspace", "k8s.read", "secrets", "preview", "usage")


def matches(pattern: str, name: str) -> bool:
    """``*`` matches every name; ``prefix.*`` every name under ``prefix.``; anything else
    only itself."""
    pattern = pattern.strip()
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return name.startswith(pattern[:-1])
    return pattern == name


def any_match(patterns: Iterable[str], name: str) -> bool:
    return any(matches(p, name) for p in patterns)


@dataclass(frozen=True)
class Grant:
    """What one token may do: its plan's patterns and its sandbox's (empty: the plan's)."""

    plan: tuple[str, ...]
    sandbox: tuple[str, ...] = ()

    def allows(self, name: str) -> bool:
        if not any_match(self.plan, name):
            return False
        return not self.sandbox or any_match(self.sandbox, name)


@dataclass(frozen=True)
class Plans:
    """The operator's plans: plan id → patterns, and the plan of an org that has none."""

    plans: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default: str = ""

    def patterns(self, plan: str) -> tuple[str, ...]:
        """The patterns of ``plan`` (the default plan's when unknown or empty)."""
        return tuple(self.plans.get(plan or self.default, self.plans.get(self.default, ())))
