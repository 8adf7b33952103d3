"""Mail deliveries in the database: one row per Message-ID, so a Redis crash cannot send twice

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The maildelivery table."""
    op.create_table(
        "maildelivery",
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("queue", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("recipient", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("message_id"),
    )
    with op.batch_alter_table("maildelivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_maildelivery_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("maildelivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_maildelivery_job_id"))
    op.drop_table("maildelivery")
