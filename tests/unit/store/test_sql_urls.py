"""Database URL rules of the SQL store (no database needed)."""

from __future__ import annotations

import pytest

from openova_sandbox.domain.errors import Invalid
from openova_sandbox.store.sql_engine import parse_url, safe_url


@pytest.mark.parametrize(
    ("raw", "driver"),
    [
        ("sqlite:////var/lib/sandbox/sandbox.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///rel/sandbox.db", "sqlite+aiosqlite"),
        ("postgresql://u:p@h/db", "postgresql+asyncpg"),
        ("postgres://u@h:5433/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_accepted_spellings(raw: str, driver: str) -> None:
    assert parse_url(raw).drivername == driver


@pytest.mark.parametrize(
    "raw",
    [
        "mysql://u@h/db",
        "postgresql+psycopg2://u@h/db",
        "sqlite+aiosqlite:///:memory:",
        "sqlite://",
        "not a url",
    ],
)
def test_rejected(raw: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_url(raw)
    assert caught.value.code == "invalid-settings"
    assert caught.value.detail


def test_safe_url_hides_the_password() -> None:
    rendered = safe_url(parse_url("postgresql://app:hunter2@db/sbx"))
    assert "hunter2" not in rendered
    assert rendered == "postgresql+asyncpg://app:***@db/sbx"
