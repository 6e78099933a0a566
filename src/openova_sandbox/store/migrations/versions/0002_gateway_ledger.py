"""The model gateway's ledger: tokens, monthly spend, reservations, budgets, usage.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gateway_tokens",
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("sandbox", sa.String(253), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("owner_sub", sa.String(255), nullable=False),
        sa.Column("owner_email", sa.String(320), nullable=False),
        sa.Column("org", sa.String(253), nullable=False),
        sa.Column("issued_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "sandbox", name="pk_gateway_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_gateway_tokens_sha256"),
    )
    op.create_table(
        "gateway_spend",
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(320), nullable=False),
        sa.Column("spent_nanos", sa.BigInteger(), nullable=False),
        sa.Column("reserved_nanos", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("month", "scope", "namespace", "name", name="pk_gateway_spend"),
    )
    op.create_table(
        "gateway_reservations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("user_name", sa.String(320), nullable=False),
        sa.Column("sandbox", sa.String(253), nullable=False),
        sa.Column("amount_nanos", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("settled_at", _WHEN, nullable=True),
        sa.Column("released", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gateway_reservations"),
    )
    op.create_index("ix_gateway_reservations_created_at", "gateway_reservations", ["created_at"])
    op.create_table(
        "gateway_budgets",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(320), nullable=False),
        sa.Column("limit_nanos", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("updated_by", sa.String(320), nullable=False),
        sa.PrimaryKeyConstraint("scope", "namespace", "name", name="pk_gateway_budgets"),
    )
    op.create_table(
        "gateway_usage",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("started_at", _WHEN, nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("org", sa.String(253), nullable=False),
        sa.Column("sandbox", sa.String(253), nullable=False),
        sa.Column("owner_sub", sa.String(255), nullable=False),
        sa.Column("user_name", sa.String(320), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("api", sa.String(32), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gateway_usage"),
    )
    # the reports' filters: an org from a date, one owner's or one sandbox's usage
    op.create_index("ix_gateway_usage_ns_started", "gateway_usage", ["namespace", "started_at"])
    op.create_index(
        "ix_gateway_usage_ns_owner_started",
        "gateway_usage",
        ["namespace", "owner_sub", "started_at"],
    )
    op.create_index(
        "ix_gateway_usage_ns_sandbox_started",
        "gateway_usage",
        ["namespace", "sandbox", "started_at"],
    )


def downgrade() -> None:
    op.drop_table("gateway_usage")
    op.drop_table("gateway_budgets")
    op.drop_index("ix_gateway_reservations_created_at", table_name="gateway_reservations")
    op.drop_table("gateway_reservations")
    op.drop_table("gateway_spend")
    op.drop_table("gateway_tokens")
