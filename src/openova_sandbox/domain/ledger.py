"""The model gateway's ledger vocabulary: who a gateway token speaks for, what one
request used, budgets and the money arithmetic they share.

Money is kept as integer nano-dollars (``10**-9`` USD) wherever it is stored or
compared: exact on every backend (SQLite has no decimal type), and fine enough for a
request of a few tokens at cents per million. Reservations round up, costs to the
nearest nano-dollar.

Budgets are monthly, per calendar month in UTC (``YYYY-MM``), for three scopes within
an org's namespace: the org itself, a user (by email, lowercased; the subject when the
token had no email) and a sandbox (by its id). A scope's limit is the one set through
the API (which may be "no cap"), else the operator's default, else none.

The interface that uses these (``GatewayLedger``) lives in
``openova_sandbox.services.gateway_ledger``, which re-exports every name here.
"""

from __future__ import annotations

import calendar
import hashlib
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Literal

from .errors import Invalid, QuotaExceeded
from .model import ANNOTATION_SUB, Sandbox

NANOS_PER_USD = 10**9
_NANO = Decimal(1).scaleb(-9)
# the largest budget the API takes (and the largest amount a ledger row holds comfortably)
MAX_BUDGET_USD = Decimal(1_000_000_000)

Scope = Literal["org", "user", "sandbox"]
SCOPES: tuple[Scope, ...] = ("org", "user", "sandbox")
GroupBy = Literal["sandbox", "user", "model"]
GROUP_BYS: tuple[GroupBy, ...] = ("sandbox", "user", "model")
# the wire shapes the gateway meters
APIS = ("openai-chat", "openai-responses", "anthropic-messages")


TOKEN_PREFIX = "sk-sandbox-"


def new_token() -> str:
    """A gateway token: 256 random bits, with a prefix secret scanners and people
    recognise (and that OpenAI-style clients accept as an API key)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What is stored of a token: its SHA-256 (the token has 256 random bits, so no
    salt or slow hash is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_reservation_id() -> str:
    return uuid.uuid4().hex


# --- who and what ---------------------------------------------------------------------


def user_key(email: str, sub: str) -> str:
    """The name a user's budget and usage go by: the email, lowercased, else the subject."""
    return email.strip().lower() or sub.strip()


@dataclass(frozen=True)
class BudgetKey:
    """One budget: a scope and a name within an org's namespace. The org scope's name is
    the namespace itself."""

    scope: Scope
    namespace: str
    name: str

    def describe(self) -> str:
        return f"{self.scope} {self.name}"


@dataclass(frozen=True)
class GatewayIdentity:
    """Whom a gateway token speaks for. ``org`` is the org's slug (the sandbox's
    ``org`` label); ``namespace`` the org's namespace, the tenancy boundary of usage and
    budgets."""

    sandbox: str
    namespace: str
    owner_sub: str
    owner_email: str
    org: str

    @property
    def user(self) -> str:
        return user_key(self.owner_email, self.owner_sub)

    def budget_keys(self) -> tuple[BudgetKey, BudgetKey, BudgetKey]:
        """Org, user, sandbox: the order every backend takes their rows in (so two
        transactions never wait on each other's rows in opposite orders)."""
        return (
            BudgetKey("org", self.namespace, self.namespace),
            BudgetKey("user", self.namespace, self.user),
            BudgetKey("sandbox", self.namespace, self.sandbox),
        )


def identity_of(sandbox: Sandbox) -> GatewayIdentity:
    """Whom the sandbox's token speaks for: the sandbox, its owner and its org."""
    return GatewayIdentity(
        sandbox=sandbox.name,
        namespace=sandbox.namespace,
        owner_sub=sandbox.metadata.annotations.get(ANNOTATION_SUB, ""),
        owner_email=sandbox.spec.owner_email,
        org=sandbox.spec.org_slug,
    )


@dataclass(frozen=True)
class UsageRecord:
    """One gateway request, as metered. ``api``: one of ``APIS``; ``status``: the HTTP
    status the caller got (0 when the client went away before one was sent)."""

    identity: GatewayIdentity
    model: str
    provider: str
    api: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal
    latency_ms: float
    status: int
    stream: bool
    started_at: datetime


class BudgetExceeded(QuotaExceeded):
    """A reservation would take a scope past its monthly budget (HTTP 429)."""

    code = "budget-exceeded"

    def __init__(self, key: BudgetKey, limit_usd: Decimal, month: str) -> None:
        super().__init__(budget_message(key, limit_usd, month))
        self.key = key
        self.limit_usd = limit_usd
        self.month = month


def budget_message(key: BudgetKey, limit_usd: Decimal, month: str) -> str:
    return (
        f"monthly budget of {format_usd(limit_usd)} for {key.describe()} reached "
        f"(resets {next_month_start(month).isoformat()} UTC)"
    )


# --- money ------------------------------------------------------------------------------


def to_nanos(amount: Decimal, *, round_up: bool = False) -> int:
    """USD → integer nano-dollars (up for reservations, to nearest otherwise)."""
    rounding = ROUND_CEILING if round_up else ROUND_HALF_EVEN
    return int(amount.quantize(_NANO, rounding=rounding).scaleb(9))


def from_nanos(nanos: int) -> Decimal:
    return (Decimal(nanos) * _NANO).normalize() if nanos else Decimal(0)


def format_usd(amount: Decimal) -> str:
    """``$5.00``; amounts under a cent keep their digits (``$0.0042``)."""
    if amount != 0 and abs(amount) < Decimal("0.01"):
        return f"${amount.normalize():f}"
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):,}"


def format_spend(amount: Decimal) -> str:
    """The ``spend30d`` text of sandbox-resource.md: ``USD 42.10``."""
    return f"USD {amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN)}"


def usd_number(amount: Decimal) -> float:
    """A JSON number for the wire, to the nano-dollar (costs per request are tiny)."""
    return float(amount.quantize(_NANO, rounding=ROUND_HALF_EVEN))


def parse_budget(value: Any) -> Decimal | None:
    """A budget from the API or the environment: a non-negative amount in USD
    (number or numeric string), or ``None`` / ``""`` for no cap. Raises ``Invalid``
    (``invalid-budget``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise Invalid(
            "a budget is an amount in USD (a number or a numeric string) or null for no cap",
            code="invalid-budget",
        )
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise Invalid(f"budget {value!r} is not an amount in USD", code="invalid-budget") from exc
    if not amount.is_finite() or amount < 0:
        raise Invalid(
            f"budget {value!r} must be a finite amount of at least 0", code="invalid-budget"
        )
    if amount > MAX_BUDGET_USD:
        raise Invalid(
            f"budget {value!r} is above the largest one taken ({format_usd(MAX_BUDGET_USD)})",
            code="invalid-budget",
        )
    if amount != amount.quantize(_NANO, rounding=ROUND_HALF_EVEN):
        raise Invalid(f"budget {value!r} has more than 9 decimals", code="invalid-budget")
    return amount


# --- time -------------------------------------------------------------------------------


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC (what SQLite hands back)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def month_of(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m")


def day_of(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%d")


def next_month_start(month: str) -> date:
    year, number = (int(part) for part in month.split("-"))
    days = calendar.monthrange(year, number)[1]
    return date(year, number, 1) + timedelta(days=days)


# --- limits -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetDefaults:
    """The operator's monthly defaults per scope (``None``: no cap)."""

    org: Decimal | None = None
    user: Decimal | None = None
    sandbox: Decimal | None = None

    def for_scope(self, scope: Scope) -> Decimal | None:
        value: Decimal | None = getattr(self, scope)
        return value


@dataclass(frozen=True)
class BudgetOverride:
    """A budget set through the API; ``limit_usd=None`` is an explicit "no cap"."""

    key: BudgetKey
    limit_usd: Decimal | None
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class BudgetState:
    """A budget as it stands this month."""

    key: BudgetKey
    limit_usd: Decimal | None
    source: Literal["default", "set"]
    month: str
    spent_usd: Decimal
    reserved_usd: Decimal
    updated_at: datetime | None = None
    updated_by: str = ""

    @property
    def remaining_usd(self) -> Decimal | None:
        if self.limit_usd is None:
            return None
        return max(Decimal(0), self.limit_usd - self.spent_usd - self.reserved_usd)


def resolve_limit(
    key: BudgetKey, defaults: BudgetDefaults, overrides: Mapping[BudgetKey, int | None]
) -> int | None:
    """The limit in nano-dollars that holds for ``key`` (``None``: no cap)."""
    if key in overrides:
        return overrides[key]
    default = defaults.for_scope(key.scope)
    return None if default is None else to_nanos(default)


def admits(spent: int, reserved: int, amount: int, limit: int | None) -> bool:
    """Whether a reservation of ``amount`` fits: the whole worst case stays within the
    limit, and a budget already used up refuses even a free request. Every backend
    applies exactly this (the SQL one in its ``UPDATE ... WHERE``)."""
    if limit is None:
        return True
    return spent + reserved + amount <= limit and spent + reserved < limit


# --- reports ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageTotals:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_nanos: int = 0

    @property
    def cost_usd(self) -> Decimal:
        return from_nanos(self.cost_nanos)

    def __add__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cost_nanos + other.cost_nanos,
        )

    @classmethod
    def of(cls, record: UsageRecord) -> UsageTotals:
        return cls(
            1,
            record.input_tokens,
            record.output_tokens,
            record.cache_read_tokens,
            record.cache_write_tokens,
            to_nanos(record.cost_usd),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cacheReadTokens": self.cache_read_tokens,
            "cacheWriteTokens": self.cache_write_tokens,
            "costUsd": usd_number(self.cost_usd),
        }

    def item_usage(self) -> dict[str, Any]:
        """A session item's ``usage30d``."""
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "costUsd": usd_number(self.cost_usd),
        }


@dataclass(frozen=True)
class UsageQuery:
    """Usage of one namespace from ``since`` (inclusive) to ``until`` (exclusive; None:
    now), of one owner (``owner_sub``) or everyone; split by day and/or a group."""

    namespace: str
    since: datetime
    until: datetime | None = None
    owner_sub: str | None = None
    sandboxes: tuple[str, ...] | None = None  # None: every sandbox
    group_by: GroupBy | None = None
    by_day: bool = True


@dataclass(frozen=True)
class UsageRow:
    """One bucket of a query: ``day`` / ``group`` are ``None`` when not split by them."""

    day: str | None
    group: str | None
    totals: UsageTotals


@dataclass(frozen=True)
class UsageReport:
    totals: UsageTotals
    days: tuple[tuple[str, UsageTotals], ...] = ()
    groups: tuple[tuple[str, UsageTotals], ...] = field(default=())


def fold_rows(rows: Iterable[UsageRow]) -> UsageReport:
    """Totals, days in date order, groups by cost (then name)."""
    total = UsageTotals()
    days: dict[str, UsageTotals] = {}
    groups: dict[str, UsageTotals] = {}
    for row in rows:
        total = total + row.totals
        if row.day is not None:
            days[row.day] = days.get(row.day, UsageTotals()) + row.totals
        if row.group is not None:
            groups[row.group] = groups.get(row.group, UsageTotals()) + row.totals
    ordered = sorted(groups.items(), key=lambda item: (-item[1].cost_nanos, item[0]))
    return UsageReport(total, tuple(sorted(days.items())), tuple(ordered))


def group_value(record: UsageRecord, group_by: GroupBy | None) -> str | None:
    if group_by == "sandbox":
        return record.identity.sandbox
    if group_by == "user":
        return record.identity.user
    if group_by == "model":
        return record.model
    return None


def matches(record: UsageRecord, query: UsageQuery) -> bool:
    identity = record.identity
    if identity.namespace != query.namespace:
        return False
    if query.owner_sub is not None and identity.owner_sub != query.owner_sub:
        return False
    if query.sandboxes is not None and identity.sandbox not in query.sandboxes:
        return False
    started = as_utc(record.started_at)
    if started < as_utc(query.since):
        return False
    return query.until is None or started < as_utc(query.until)
