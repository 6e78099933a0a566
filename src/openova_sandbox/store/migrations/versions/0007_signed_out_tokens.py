"""Token cookies signed out of (``POST /logout``; auth/signouts.py): one row per token by
its subject and ``jti`` until the token's own expiry, so a sign-out outlives a restart.
The token itself is never stored.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sandbox_signed_out_tokens",
        sa.Column("sub", sa.Text(), nullable=False),
        sa.Column("jti", sa.String(256), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sub", "jti", name="pk_sandbox_signed_out_tokens"),
    )
    # removing the expired ones, loading the live ones latest-expiring first
    op.create_index(
        "ix_sandbox_signed_out_tokens_expires_at", "sandbox_signed_out_tokens", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_sandbox_signed_out_tokens_expires_at", table_name="sandbox_signed_out_tokens")
    op.drop_table("sandbox_signed_out_tokens")
