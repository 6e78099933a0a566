"""Each sandbox's secrets for its agents (issue 14, ``secrets.*``): one row per secret,
keyed by the sandbox's uid and the secret's name, the value sealed by the service.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sandbox_secrets",
        sa.Column("sandbox_uid", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("sandbox_uid", "name", name="pk_sandbox_secrets"),
    )


def downgrade() -> None:
    op.drop_table("sandbox_secrets")
