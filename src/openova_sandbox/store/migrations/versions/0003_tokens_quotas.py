"""Personal access tokens and quota overrides (issue 11).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sandbox_access_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner_sub", sa.String(255), nullable=False),
        sa.Column("owner_email", sa.String(320), nullable=False),
        sa.Column("org", sa.String(253), nullable=False),
        # the rest of the owner's identity when the token was made (roles, tier, ...)
        sa.Column("identity", _JSON, nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("last_used_at", _WHEN, nullable=True),
        sa.Column("revoked_at", _WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sandbox_access_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_sandbox_access_tokens_sha256"),
    )
    op.create_index(
        "ix_sandbox_access_tokens_org_owner", "sandbox_access_tokens", ["org", "owner_sub"]
    )
    op.create_table(
        "sandbox_quotas",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(320), nullable=False),
        sa.Column("quota", sa.String(32), nullable=False),
        sa.Column("max_value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("updated_by", sa.String(320), nullable=False),
        sa.PrimaryKeyConstraint("scope", "namespace", "name", "quota", name="pk_sandbox_quotas"),
    )


def downgrade() -> None:
    op.drop_table("sandbox_quotas")
    op.drop_index("ix_sandbox_access_tokens_org_owner", table_name="sandbox_access_tokens")
    op.drop_table("sandbox_access_tokens")
