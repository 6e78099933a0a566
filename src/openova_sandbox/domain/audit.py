"""The audit log's vocabulary: what one record says and how the records are chained.

A record is one thing a person (or a token) did, or tried to do: sign in, create or
delete a sandbox, attach to or detach from a terminal, share, create or revoke an access
token, change a quota. It holds when, who (``sub``, ``email``), in which org, what
(``action``), on what (``target``), how it ended (``outcome``), from where (the client
address) and a few plain facts (``detail``) - never a secret or a token.

Records are chained per org: record ``n`` holds the hash of record ``n - 1`` of the same
org (``prev``; the first holds :data:`GENESIS`) and its own ``hash``, the SHA-256 of its
canonical JSON (every field but ``hash``, keys sorted, ASCII, no spaces). Changing,
inserting or removing a record in the middle breaks the next link; :func:`verify` finds
the first broken one. Removing the newest records leaves a shorter, valid chain: compare
the head (the last ``seq`` and ``hash``, ``sandbox audit verify`` prints it) with a copy
kept elsewhere to see that.

Per org rather than one chain for the server: an org admin's export is a whole chain
that they can verify themselves (``sandbox audit verify --file``), and writers of
different orgs do not queue behind one another.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .errors import Invalid

GENESIS = "0" * 64
Outcome = Literal["success", "denied", "failure"]
OUTCOMES: tuple[Outcome, ...] = ("success", "denied", "failure")
DetailValue = str | int | float | bool | None

# the actions recorded (a filter may name any string; these are what the server writes)
SIGN_IN = "auth.sign-in"
SIGN_OUT = "auth.sign-out"
SANDBOX_CREATE = "sandbox.create"
SANDBOX_DELETE = "sandbox.delete"
TERMINAL_ATTACH = "terminal.attach"
TERMINAL_DETACH = "terminal.detach"
TERMINAL_CLOSE = "terminal.close"  # a terminal ended through the API (the admin's Stop)
SHARE_CREATE = "share.create"
SHARE_REVOKE = "share.revoke"
TOKEN_CREATE = "token.create"
TOKEN_REVOKE = "token.revoke"
QUOTA_SET = "quota.set"
QUOTA_CLEAR = "quota.clear"
BUDGET_SET = "budget.set"
BUDGET_CLEAR = "budget.clear"
SECRET_READ = "secret.read"  # an agent read a sandbox secret's value (MCP secrets.get)
SECRET_SET = "secret.set"  # an agent set a sandbox secret (MCP secrets.set)
ACTIONS = (
    SIGN_IN,
    SIGN_OUT,
    SANDBOX_CREATE,
    SANDBOX_DELETE,
    TERMINAL_ATTACH,
    TERMINAL_DETACH,
    TERMINAL_CLOSE,
    SHARE_CREATE,
    SHARE_REVOKE,
    TOKEN_CREATE,
    TOKEN_REVOKE,
    QUOTA_SET,
    QUOTA_CLEAR,
    BUDGET_SET,
    BUDGET_CLEAR,
    SECRET_READ,
    SECRET_SET,
)

# column sizes (the SQL table's); longer values are cut, not refused: a record is
# written for whatever happened
MAX_ORG = 253
MAX_SUB = 255
MAX_EMAIL = 320
MAX_ACTION = 64
MAX_TARGET = 512
MAX_CLIENT = 64
MAX_DETAIL_KEYS = 16
MAX_DETAIL_TEXT = 256
MAX_LIMIT = 500
DEFAULT_LIMIT = 100

# detail keys that could carry a credential are dropped, whoever passes them
_SECRET_KEY = re.compile(r"token|secret|password|passwd|key|cookie|authorization|credential", re.I)
_ACTION = re.compile(r"[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*")


def clean_text(value: str, limit: int) -> str:
    """Storable on every backend: no lone surrogates (they do not encode as UTF-8), no
    NUL (PostgreSQL text refuses it), at most ``limit`` characters."""
    text = value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return text[:limit]


def clean_detail(detail: Mapping[str, Any] | None) -> dict[str, DetailValue]:
    """Plain scalars only, secret-looking keys dropped, texts cut."""
    out: dict[str, DetailValue] = {}
    for key, value in (detail or {}).items():
        if len(out) >= MAX_DETAIL_KEYS:
            break
        if not isinstance(key, str) or _SECRET_KEY.search(key):
            continue
        name = clean_text(key, 64)
        if value is None or isinstance(value, bool | int):
            out[name] = value
        elif isinstance(value, float):
            out[name] = value if value == value and abs(value) != float("inf") else None
        else:
            out[name] = clean_text(str(value), MAX_DETAIL_TEXT)
    return out


def format_at(value: datetime) -> str:
    """The record's time on the wire and in the hash: UTC, microseconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class AuditEntry:
    """What a caller records; the log adds ``seq``, ``at``, ``prev`` and ``hash``."""

    action: str
    org: str
    actor_sub: str = ""
    actor_email: str = ""
    target: str = ""
    outcome: Outcome = "success"
    client: str = ""
    detail: Mapping[str, DetailValue] = field(default_factory=dict)

    def cleaned(self) -> AuditEntry:
        outcome: Outcome = self.outcome if self.outcome in OUTCOMES else "failure"
        return AuditEntry(
            action=clean_text(self.action, MAX_ACTION),
            org=clean_text(self.org, MAX_ORG),
            actor_sub=clean_text(self.actor_sub, MAX_SUB),
            actor_email=clean_text(self.actor_email, MAX_EMAIL),
            target=clean_text(self.target, MAX_TARGET),
            outcome=outcome,
            client=clean_text(self.client, MAX_CLIENT),
            detail=clean_detail(self.detail),
        )


@dataclass(frozen=True)
class AuditRecord:
    """One stored record; ``seq`` counts from 1 within its org."""

    org: str
    seq: int
    at: datetime
    action: str
    actor_sub: str
    actor_email: str
    target: str
    outcome: str
    client: str
    detail: Mapping[str, DetailValue]
    prev: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The wire shape (API, JSON lines export)."""
        return {
            "org": self.org,
            "seq": self.seq,
            "at": format_at(self.at),
            "actor": {"sub": self.actor_sub, "email": self.actor_email},
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "client": self.client,
            "detail": dict(self.detail),
            "prev": self.prev,
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """Read back an exported line; ``Invalid`` names what is missing or malformed."""
        try:
            actor = data["actor"]
            return cls(
                org=_str(data["org"]),
                seq=_int(data["seq"]),
                at=_parse_at(_str(data["at"])),
                action=_str(data["action"]),
                actor_sub=_str(actor["sub"]),
                actor_email=_str(actor["email"]),
                target=_str(data["target"]),
                outcome=_str(data["outcome"]),
                client=_str(data["client"]),
                detail=dict(data["detail"]),
                prev=_str(data["prev"]),
                hash=_str(data["hash"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise Invalid(f"not an audit record: {exc!s}", code="invalid-audit-record") from exc


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _parse_at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def record_hash(entry: AuditEntry, *, seq: int, at: datetime, prev: str) -> str:
    """SHA-256 (hex) of the canonical JSON of every field but the hash itself."""
    body = {
        "org": entry.org,
        "seq": seq,
        "at": format_at(at),
        "actor": {"sub": entry.actor_sub, "email": entry.actor_email},
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "client": entry.client,
        "detail": dict(entry.detail),
        "prev": prev,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def chain(entry: AuditEntry, *, seq: int, at: datetime, prev: str) -> AuditRecord:
    """The record that follows a head (``seq - 1``, ``prev``); ``entry`` is cleaned."""
    return AuditRecord(
        org=entry.org,
        seq=seq,
        at=at,
        action=entry.action,
        actor_sub=entry.actor_sub,
        actor_email=entry.actor_email,
        target=entry.target,
        outcome=entry.outcome,
        client=entry.client,
        detail=dict(entry.detail),
        prev=prev,
        hash=record_hash(entry, seq=seq, at=at, prev=prev),
    )


def entry_of(record: AuditRecord) -> AuditEntry:
    return AuditEntry(
        action=record.action,
        org=record.org,
        actor_sub=record.actor_sub,
        actor_email=record.actor_email,
        target=record.target,
        outcome=record.outcome,  # type: ignore[arg-type]  # as stored: hashed as is
        client=record.client,
        detail=record.detail,
    )


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify` found for one org's chain."""

    org: str
    records: int  # how many were checked
    head_seq: int  # the last good record's seq (0: none)
    head_hash: str  # its hash (GENESIS: none)
    broken_seq: int | None = None  # the first record whose link or hash is wrong
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def verify(
    org: str, records: Iterable[AuditRecord], *, start_seq: int = 1, start_prev: str = GENESIS
) -> ChainReport:
    """Check one org's records in ``seq`` order from ``start_seq`` (whose ``prev`` must be
    ``start_prev``): dense numbering, each ``prev`` the previous record's hash, each hash
    the record's own. Stops at the first broken link."""
    expected_seq, prev, count = start_seq, start_prev, 0
    head_seq = start_seq - 1
    for record in records:
        count += 1
        problem = ""
        if record.org != org:
            problem = f"record of org {record.org!r} in the chain of {org!r}"
        elif record.seq != expected_seq:
            problem = (
                f"seq {record.seq} where {expected_seq} was expected "
                "(a record is missing or was inserted)"
            )
        elif record.prev != prev:
            problem = (
                "prev is not the previous record's hash "
                "(a record before it was changed, removed or inserted)"
            )
        elif (
            record_hash(entry_of(record), seq=record.seq, at=record.at, prev=record.prev)
            != record.hash
        ):
            problem = "hash does not match the record's content (the record was changed)"
        if problem:
            return ChainReport(
                org,
                count,
                head_seq,
                prev,
                broken_seq=record.seq if record.seq else expected_seq,
                reason=problem,
            )
        head_seq, prev, expected_seq = record.seq, record.hash, record.seq + 1
    return ChainReport(org, count, head_seq, prev)


@dataclass(frozen=True)
class AuditQuery:
    """One page of an org's records. ``before``: only records with a smaller ``seq``
    (the cursor of the next page, newest first); ``after``: only larger ones (oldest
    first, the export's order)."""

    org: str
    since: datetime | None = None
    until: datetime | None = None
    actor: str = ""  # a sub or an email (exact; emails case-insensitively)
    action: str = ""  # exact, or a prefix ending in ``.*`` (``sandbox.*``)
    before: int | None = None
    after: int | None = None
    limit: int = DEFAULT_LIMIT
    newest_first: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise Invalid(f"limit must be between 1 and {MAX_LIMIT}", code="invalid-request")
        if self.action and not _ACTION.fullmatch(self.action.removesuffix(".*")):
            raise Invalid(
                "action is a dotted name such as sandbox.create, or a prefix such as sandbox.*",
                code="invalid-request",
            )
        if self.since and self.until and self.since > self.until:
            raise Invalid("since is after until", code="invalid-request")

    def matches(self, record: AuditRecord) -> bool:
        if record.org != self.org:
            return False
        if self.since is not None and record.at < self.since:
            return False
        if self.until is not None and record.at >= self.until:
            return False
        if self.actor and not (
            record.actor_sub == self.actor or record.actor_email.lower() == self.actor.lower()
        ):
            return False
        if self.action:
            if self.action.endswith(".*"):
                if not record.action.startswith(self.action[:-1]):
                    return False
            elif record.action != self.action:
                return False
        if self.before is not None and record.seq >= self.before:
            return False
        return self.after is None or record.seq > self.after
