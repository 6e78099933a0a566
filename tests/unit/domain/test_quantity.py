"""Kubernetes quantities as exact decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from openova_sandbox.domain.quantity import parse_quantity, smaller


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4", Decimal(4)),
        ("500m", Decimal("0.5")),
        ("0.25", Decimal("0.25")),
        ("8Gi", Decimal(8 * 1024**3)),
        ("1.5Gi", Decimal(3 * 512 * 1024**2)),
        ("5G", Decimal(5 * 10**9)),
        ("128Mi", Decimal(128 * 1024**2)),
        (" 2Ti ", Decimal(2 * 1024**4)),
    ],
)
def test_values(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "1e3", "-1", "5 Gi", "5gi", "1.Gi", "abc"])
def test_not_quantities(text):
    assert parse_quantity(text) is None


def test_smaller_keeps_the_written_form():
    assert smaller("500m", "250m") == "250m"
    assert smaller("500m", "2") == "500m"
    assert smaller("256Mi", "0.1Gi") == "0.1Gi"
    assert smaller("256Mi", "not-a-quantity") == "256Mi"
