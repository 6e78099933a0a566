"""The gateway ledger's tables, as its queries see them (migration 0002 creates them).

- ``gateway_tokens``: one row per sandbox holding a gateway token: its SHA-256 (the
  token itself is never stored) and whom it speaks for.
- ``gateway_spend``: one row per (month, scope, namespace, name): what was spent and
  what is reserved by requests in flight, in nano-dollars. Reservations are the
  conditional ``UPDATE`` of ``sql_ledger``; the row lock makes them atomic across
  processes.
- ``gateway_reservations``: each reservation, so a settle knows its month and keys and
  one that was never settled (its process died) can be released after a while.
- ``gateway_budgets``: budgets set through the API (``limit_nanos`` NULL: no cap).
- ``gateway_usage``: one row per metered request.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

# SQLite gives an autoincrement key only to INTEGER PRIMARY KEY
RowId = BigInteger().with_variant(Integer(), "sqlite")

tokens = Table(
    "gateway_tokens",
    metadata,
    Column("namespace", String(253), primary_key=True),
    Column("sandbox", String(253), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("owner_sub", String(255), nullable=False),
    Column("owner_email", String(320), nullable=False),
    Column("org", String(253), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

spend = Table(
    "gateway_spend",
    metadata,
    Column("month", String(7), primary_key=True),
    Column("scope", String(16), primary_key=True),
    Column("namespace", String(253), primary_key=True),
    Column("name", String(320), primary_key=True),
    Column("spent_nanos", BigInteger, nullable=False),
    Column("reserved_nanos", BigInteger, nullable=False),
)

reservations = Table(
    "gateway_reservations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("month", String(7), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("user_name", String(320), nullable=False),
    Column("sandbox", String(253), nullable=False),
    Column("amount_nanos", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("settled_at", DateTime(timezone=True), nullable=True),
    Column("released", Boolean, nullable=False),
)

budgets = Table(
    "gateway_budgets",
    metadata,
    Column("scope", String(16), primary_key=True),
    Column("namespace", String(253), primary_key=True),
    Column("name", String(320), primary_key=True),
    Column("limit_nanos", BigInteger, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(320), nullable=False),
)

usage = Table(
    "gateway_usage",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("day", String(10), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("org", String(253), nullable=False),
    Column("sandbox", String(253), nullable=False),
    Column("owner_sub", String(255), nullable=False),
    Column("user_name", String(320), nullable=False),
    Column("model", String(255), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("api", String(32), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("status", Integer, nullable=False),
    Column("stream", Boolean, nullable=False),
)
