"""The order in which token cookies' sign-outs were recorded (auth/signouts.py): each row
numbered by its write (``recorded``: one more than the highest number in the table, the
writers taking turns), so every running API replica reads the ones recorded since it last
looked (``recorded`` above the highest it has seen), with no clock involved. The rows
0007 kept are numbered 0: a replica reads them all when it starts.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sandbox_signed_out_tokens",
        sa.Column("recorded", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # the next number, and the ones recorded since a replica last looked
    op.create_index(
        "ix_sandbox_signed_out_tokens_recorded", "sandbox_signed_out_tokens", ["recorded"]
    )


def downgrade() -> None:
    op.drop_index("ix_sandbox_signed_out_tokens_recorded", table_name="sandbox_signed_out_tokens")
    with op.batch_alter_table("sandbox_signed_out_tokens") as batch:
        batch.drop_column("recorded")
