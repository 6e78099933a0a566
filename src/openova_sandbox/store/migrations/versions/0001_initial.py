"""The first schema: objects, the change log, and the resourceVersion counter row.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sandbox_objects",
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("resource_version", sa.BigInteger(), nullable=False),
        sa.Column("created_version", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("labels", _JSON, nullable=False),
        sa.Column("document", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "name", name="pk_sandbox_objects"),
        sa.UniqueConstraint("uid", name="uq_sandbox_objects_uid"),
    )
    op.create_index("ix_sandbox_objects_created_version", "sandbox_objects", ["created_version"])
    op.create_table(
        "sandbox_events",
        sa.Column("resource_version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("resource_version", name="pk_sandbox_events"),
    )
    state = op.create_table(
        "sandbox_store_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("resource_version", sa.BigInteger(), nullable=False),
        sa.Column("compacted_version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sandbox_store_state"),
    )
    op.bulk_insert(state, [{"id": 1, "resource_version": 0, "compacted_version": 0}])


def downgrade() -> None:
    op.drop_table("sandbox_store_state")
    op.drop_table("sandbox_events")
    op.drop_index("ix_sandbox_objects_created_version", table_name="sandbox_objects")
    op.drop_table("sandbox_objects")
