"""Console sessions signed in with the OIDC issuer (issue 11): one encrypted record per
session, keyed by the SHA-256 of its id.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sandbox_oidc_sessions",
        sa.Column("id_sha256", sa.String(64), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_sha256", name="pk_sandbox_oidc_sessions"),
    )
    # removing the expired ones
    op.create_index("ix_sandbox_oidc_sessions_expires_at", "sandbox_oidc_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_sandbox_oidc_sessions_expires_at", table_name="sandbox_oidc_sessions")
    op.drop_table("sandbox_oidc_sessions")
