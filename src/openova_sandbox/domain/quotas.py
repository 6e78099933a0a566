"""Quotas per user and per org (issue 11): what a caller may hold at once.

Four quotas, each counted for the user and for the user's org (its namespace):

- ``sandboxes``: Sandboxes that exist (a deleting one still counts until it is gone);
- ``terminals``: terminal processes running (embedded mode: the PTYs this server holds);
- ``websockets``: terminal WebSocket connections open to this server;
- ``waitingAttaches``: attaches waiting for their sandbox to become Ready.

A limit is a non-negative integer or ``None`` (no limit). The operator's defaults come
from the settings (``SANDBOX_QUOTA_USER``, ``SANDBOX_QUOTA_ORG``: ``name=value`` pairs,
``none`` for no limit); an org admin overrides them for the org or one of its users,
never above the operator's org default (the ceiling: an org admin divides what the
operator gives the org, and cannot take more of the server than that).

A refusal is :class:`QuotaRefused` (``quota-exceeded``, HTTP 429) whose detail names the
scope, the quota, its limit and what is in use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .errors import Invalid, QuotaExceeded

QuotaName = Literal["sandboxes", "terminals", "websockets", "waitingAttaches"]
QUOTAS: tuple[QuotaName, ...] = ("sandboxes", "terminals", "websockets", "waitingAttaches")
QuotaScope = Literal["org", "user"]
QUOTA_SCOPES: tuple[QuotaScope, ...] = ("org", "user")
# a value above this is a typo, not a quota (and stays within every database's integer)
MAX_QUOTA = 1_000_000
MAX_USER_NAME = 320
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Limits = Mapping[QuotaName, int | None]

DEFAULT_USER: dict[QuotaName, int | None] = {
    "sandboxes": 25,
    "terminals": 40,
    "websockets": 60,
    "waitingAttaches": 10,
}
DEFAULT_ORG: dict[QuotaName, int | None] = {
    "sandboxes": 250,
    "terminals": 400,
    "websockets": 600,
    "waitingAttaches": 50,
}


@dataclass(frozen=True)
class QuotaDefaults:
    """The operator's limits for every user and every org."""

    user: Limits = field(default_factory=lambda: dict(DEFAULT_USER))
    org: Limits = field(default_factory=lambda: dict(DEFAULT_ORG))

    def for_scope(self, scope: QuotaScope) -> Limits:
        return self.org if scope == "org" else self.user


@dataclass(frozen=True)
class QuotaKey:
    """One scope's quotas within an org's namespace; the org scope's name is the
    namespace itself, a user's their email lowercased (else the subject)."""

    scope: QuotaScope
    namespace: str
    name: str


@dataclass(frozen=True)
class QuotaOverride:
    key: QuotaKey
    quota: QuotaName
    value: int
    updated_at: datetime
    updated_by: str


class QuotaRefused(QuotaExceeded):
    """A quota would be exceeded; ``detail`` names the limit, the limit and the usage."""

    def __init__(self, key: QuotaKey, quota: QuotaName, limit: int, usage: int) -> None:
        who = "org" if key.scope == "org" else f"user {key.name}"
        super().__init__(
            f"{who} quota '{quota}' reached in {key.namespace}: {usage} in use, limit {limit}",
            code="quota-exceeded",
        )
        self.key = key
        self.quota = quota
        self.limit = limit
        self.usage = usage


def parse_quota_scope(scope: str) -> QuotaScope:
    for known in QUOTA_SCOPES:
        if scope == known:
            return known
    raise Invalid(f'quota scope "{_show(scope)}" is not one of org, user', code="invalid-scope")


def parse_user_name(name: str) -> str:
    text = name.strip()
    if not text or len(text) > MAX_USER_NAME or _CONTROL.search(text):
        raise Invalid(
            "a user's quotas are named by the user's email (at most 320 characters)",
            code="invalid-name",
        )
    # as ``ledger.user_key`` names users: an email lowercased, a subject (a user without
    # an email) as it is
    return text.lower() if "@" in text else text


def parse_limit(value: Any, *, what: str) -> int | None:
    """A JSON value for one quota: an integer 0..MAX_QUOTA, or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(
            f"{what} must be an integer from 0 to {MAX_QUOTA} or null, not {_json_type(value)}",
            code="invalid-quota",
        )
    if not 0 <= value <= MAX_QUOTA:
        raise Invalid(f"{what} must be from 0 to {MAX_QUOTA}, not {value}", code="invalid-quota")
    return value


def parse_quota_body(body: Any) -> dict[QuotaName, int | None]:
    """``{"sandboxes": 10, "terminals": null, ...}``: each named quota set (an integer)
    or back to the default (``null``); quotas not named are left as they are."""
    if not isinstance(body, dict):
        raise Invalid(
            'request body must be a JSON object like {"sandboxes": 10, "terminals": null}',
            code="invalid-quota",
        )
    if not body:
        raise Invalid(
            f"name at least one quota ({', '.join(QUOTAS)})",
            code="invalid-quota",
        )
    out: dict[QuotaName, int | None] = {}
    for raw_key, value in body.items():
        key = next((q for q in QUOTAS if q == raw_key), None)
        if key is None:
            raise Invalid(
                f'"{_show(str(raw_key))}" is not a quota (known: {", ".join(QUOTAS)})',
                code="invalid-quota",
            )
        out[key] = parse_limit(value, what=key)
    return out


def parse_quota_setting(
    raw: str, defaults: Limits, *, variable: str
) -> dict[QuotaName, int | None]:
    """``"sandboxes=20, terminals=none"`` over ``defaults``; ``Invalid`` naming
    ``variable`` on anything else."""
    out: dict[QuotaName, int | None] = dict(defaults)
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, value = (s.strip() for s in part.partition("="))
        key = next((q for q in QUOTAS if q == name), None)
        if not sep or key is None:
            raise Invalid(
                f"{variable}: {part!r} is not name=value with a name of {', '.join(QUOTAS)}",
                code="invalid-settings",
            )
        if value.lower() in ("none", "unlimited"):
            out[key] = None
        elif value.isdigit() and int(value) <= MAX_QUOTA:
            out[key] = int(value)
        else:
            raise Invalid(
                f"{variable}: {name}={value!r} is not an integer 0..{MAX_QUOTA} or none",
                code="invalid-settings",
            )
    return out


def admits(limit: int | None, usage: int) -> bool:
    """Whether one more fits: ``usage`` is what is held before it."""
    return limit is None or usage < limit


def _show(text: str) -> str:
    """Echo a caller's string safely (clipped, no control characters or surrogates)."""
    clipped = _CONTROL.sub("?", text[:64])
    return clipped.encode("utf-8", "replace").decode("utf-8")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number with a fraction" if isinstance(value, float) else "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
