"""The pure parts of usage and budgets: query parameters, budget amounts, money text."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from openova_sandbox.domain.errors import Invalid
from openova_sandbox.domain.ledger import (
    BudgetKey,
    UsageRow,
    UsageTotals,
    admits,
    fold_rows,
    format_spend,
    format_usd,
    from_nanos,
    next_month_start,
    parse_budget,
    to_nanos,
)
from openova_sandbox.services.usage import parse_group_by, parse_scope, parse_since

NOW = datetime(2026, 12, 6, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, datetime(2026, 11, 7, tzinfo=UTC)),  # 30 days including today
        ("", datetime(2026, 11, 7, tzinfo=UTC)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01T12:00:00+02:00", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2025-12-06", datetime(2025, 12, 6, tzinfo=UTC)),  # 366 days, the oldest taken
    ],
)
def test_since(raw: str | None, expected: datetime) -> None:
    assert parse_since(raw, NOW) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("yesterday", "is not a date"),
        ("2026-13-01", "is not a date"),
        ("2026-12-01T10:00:00", "has no time zone"),
        ("2026-12-07", "in the future"),
        ("2025-12-05", "more than 366 days back"),
    ],
)
def test_bad_since(raw: str, why: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_since(raw, NOW)
    assert caught.value.code == "invalid-since"
    assert why in caught.value.detail


def test_scope_and_group_by() -> None:
    assert parse_scope(None) == "own"
    assert parse_scope("org") == "org"
    assert parse_group_by(None) is None
    assert parse_group_by("model") == "model"
    with pytest.raises(Invalid) as scope:
        parse_scope("everyone")
    assert scope.value.code == "invalid-scope"
    with pytest.raises(Invalid) as group:
        parse_group_by("day")
    assert group.value.code == "invalid-group-by"
    assert "sandbox, user, model" in group.value.detail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("", None), (5, Decimal(5)), ("12.50", Decimal("12.50")), (0, Decimal(0))],
)
def test_budget_amounts(raw: Any, expected: Decimal | None) -> None:
    assert parse_budget(raw) == expected


@pytest.mark.parametrize(
    "raw", [-1, "abc", True, [5], {"usd": 5}, "NaN", "Infinity", "1e10", "0.0000000001"]
)
def test_bad_budget_amounts(raw: Any) -> None:
    with pytest.raises(Invalid) as caught:
        parse_budget(raw)
    assert caught.value.code == "invalid-budget"


def test_money() -> None:
    assert to_nanos(Decimal("0.0000000001"), round_up=True) == 1
    assert to_nanos(Decimal("0.0000000004")) == 0
    assert to_nanos(Decimal("1.5")) == 1_500_000_000
    assert from_nanos(1_500_000_000) == Decimal("1.5")
    assert format_usd(Decimal(5)) == "$5.00"
    assert format_usd(Decimal("1234.5")) == "$1,234.50"
    assert format_usd(Decimal("0.0042")) == "$0.0042"
    assert format_spend(Decimal("42.1")) == "USD 42.10"
    assert format_spend(Decimal(0)) == "USD 0.00"
    assert next_month_start("2026-12").isoformat() == "2027-01-01"
    assert next_month_start("2028-02").isoformat() == "2028-03-01"


def test_admits() -> None:
    assert admits(0, 0, 5, None)
    assert admits(2, 2, 1, 5)
    assert not admits(2, 2, 2, 5)
    assert admits(4, 0, 0, 5)
    assert not admits(5, 0, 0, 5)  # used up: even a free request is refused
    assert not admits(0, 0, 0, 0)


def test_fold_orders_days_and_groups() -> None:
    rows = [
        UsageRow("2026-12-02", "b", UsageTotals(1, cost_nanos=5)),
        UsageRow("2026-12-01", "a", UsageTotals(1, cost_nanos=5)),
        UsageRow("2026-12-01", "c", UsageTotals(2, cost_nanos=9)),
    ]
    report = fold_rows(rows)
    assert report.totals == UsageTotals(4, cost_nanos=19)
    assert [d for d, _ in report.days] == ["2026-12-01", "2026-12-02"]
    assert [g for g, _ in report.groups] == ["c", "a", "b"]
    assert BudgetKey("user", "acme", "dev@acme.com").describe() == "user dev@acme.com"
