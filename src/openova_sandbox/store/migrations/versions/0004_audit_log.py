"""The audit log: hash-chained records per org and each chain's head (issue 11).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHEN = sa.DateTime(timezone=True)

_PG_FUNCTION = """
CREATE FUNCTION sandbox_audit_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'sandbox_audit is append-only';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "sandbox_audit",
        sa.Column("org", sa.String(253), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("actor_sub", sa.String(255), nullable=False),
        sa.Column("actor_email", sa.String(320), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("org", "seq", name="pk_sandbox_audit"),
    )
    # the admin view's time filter within an org
    op.create_index("ix_sandbox_audit_org_at", "sandbox_audit", ["org", "at"])
    op.create_table(
        "sandbox_audit_heads",
        sa.Column("org", sa.String(253), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("org", name="pk_sandbox_audit_heads"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER sandbox_audit_append_only BEFORE UPDATE OR DELETE ON sandbox_audit"
            " FOR EACH ROW EXECUTE FUNCTION sandbox_audit_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER sandbox_audit_no_{event.lower()} BEFORE {event} ON sandbox_audit"
                " BEGIN SELECT RAISE(ABORT, 'sandbox_audit is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS sandbox_audit_append_only ON sandbox_audit")
        op.execute("DROP FUNCTION IF EXISTS sandbox_audit_append_only()")
    op.drop_table("sandbox_audit_heads")
    op.drop_index("ix_sandbox_audit_org_at", table_name="sandbox_audit")
    op.drop_table("sandbox_audit")
