"""The query language of the resource surface: kinds, label selectors, paging tokens.

Pure functions over values, kept apart from the informer so the parsing rules (which
decide 400s) can be read and tested on their own. Label selectors follow the
Kubernetes set-less subset (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, comma = AND) and
the Kubernetes key/value syntax, so a selector that works here works against a real
apiserver too. The ``continue`` token is opaque to clients: base64url (no padding) of
the last ``namespace/name`` returned, so paging is stable under concurrent writes
(an object is never returned twice; one created behind the cursor is not returned).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from ..domain.errors import Invalid, NotFound

SANDBOX_KIND = "sandbox"
# accepted spelling → canonical kind
KIND_ALIASES: Mapping[str, str] = {"sandbox": SANDBOX_KIND, "sandboxes": SANDBOX_KIND}
SUPPORTED_KINDS: tuple[str, ...] = (SANDBOX_KIND,)

MAX_LIMIT = 500

_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


def _kinds_text() -> str:
    return ", ".join(f"{k} (or {a})" for k in SUPPORTED_KINDS for a in KIND_ALIASES if a != k)


def canonical_kind(kind: str) -> str:
    """The canonical kind for a path segment; ``NotFound(unknown-kind)`` otherwise."""
    found = KIND_ALIASES.get(kind.strip().lower())
    if found is None:
        raise NotFound(
            f'kind "{kind}" is not served; supported kinds: {_kinds_text()}',
            code="unknown-kind",
        )
    return found


def parse_kinds(text: str) -> tuple[str, ...]:
    """A comma list of kinds for the stream, canonical and de-duplicated, in order."""
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise Invalid(f"kinds is required: a comma list of {_kinds_text()}", code="missing-kinds")
    out: list[str] = []
    for part in parts:
        if not part:
            continue
        found = KIND_ALIASES.get(part.lower())
        if found is None:
            raise Invalid(
                f'kind "{part}" is not served; supported kinds: {_kinds_text()}',
                code="unknown-kind",
            )
        if found not in out:
            out.append(found)
    return tuple(out)


# --- label selectors ------------------------------------------------------------------

Operator = Literal["=", "!=", "exists", "!exists"]


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Operator
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _bad_selector(text: str, why: str) -> Invalid:
    return Invalid(f'labelSelector "{text}": {why}', code="invalid-label-selector")


def _check_key(selector: str, key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _PREFIX.match(prefix)):
        raise _bad_selector(selector, f'"{key}" has an invalid prefix (a DNS subdomain)')
    if not _NAME.match(name):
        raise _bad_selector(
            selector,
            f'"{key}" is not a label key (up to 63 letters, digits, "-", "_", "." '
            "starting and ending alphanumeric, with an optional DNS-subdomain prefix and /)",
        )
    return key


def _check_value(selector: str, value: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise _bad_selector(
            selector,
            f'"{value}" is not a label value (up to 63 letters, digits, "-", "_", "." '
            "starting and ending alphanumeric)",
        )
    return value


def parse_label_selector(text: str | None) -> LabelSelector:
    """``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, joined by commas (all must match)."""
    if text is None or not text.strip():
        return LabelSelector()
    requirements: list[Requirement] = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            raise _bad_selector(text, "empty requirement (stray comma)")
        if "!=" in term:
            key, _, value = term.partition("!=")
            requirements.append(
                Requirement(_check_key(text, key.strip()), "!=", _check_value(text, value.strip()))
            )
        elif "=" in term:
            key, _, value = term.partition("==" if "==" in term else "=")
            if "=" in value:
                raise _bad_selector(text, f'"{term}" has more than one operator')
            requirements.append(
                Requirement(_check_key(text, key.strip()), "=", _check_value(text, value.strip()))
            )
        elif term.startswith("!"):
            requirements.append(Requirement(_check_key(text, term[1:].strip()), "!exists"))
        elif any(c in term for c in " ()<>"):
            raise _bad_selector(text, f'"{term}": set-based selectors are not supported')
        else:
            requirements.append(Requirement(_check_key(text, term), "exists"))
    return LabelSelector(tuple(requirements))


# --- paging ---------------------------------------------------------------------------

Key = tuple[str, str]
T = TypeVar("T")


def encode_continue(key: Key) -> str:
    raw = f"{key[0]}/{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_continue(token: str) -> Key:
    def bad(why: str) -> Invalid:
        return Invalid(
            f"continue token is not one this server issued ({why}); "
            "list again without it to start over",
            code="invalid-continue",
        )

    text = token.strip()
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise bad("not base64url")
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise bad("not base64url") from exc
    namespace, slash, name = decoded.partition("/")
    if not slash or not namespace or not name or "/" in name or not decoded.isprintable():
        raise bad("no namespace/name inside")
    return namespace, name


@dataclass(frozen=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_key: Key | None  # the last key returned, when more items follow


def page(
    ordered: Sequence[tuple[Key, T]], *, after: Key | None = None, limit: int | None = None
) -> Page[T]:
    """Items with a key strictly after ``after``, at most ``limit`` of them."""
    rest = [(k, v) for k, v in ordered if after is None or k > after]
    if limit is None or len(rest) <= limit:
        return Page(tuple(v for _, v in rest), None)
    taken = rest[:limit]
    return Page(tuple(v for _, v in taken), taken[-1][0])


def check_limit(limit: int | None) -> int | None:
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be between 1 and {MAX_LIMIT}, got {limit}", code="invalid-limit")
    return limit


def sorted_by_key(items: Iterable[tuple[Key, T]]) -> list[tuple[Key, T]]:
    return sorted(items, key=lambda kv: kv[0])
