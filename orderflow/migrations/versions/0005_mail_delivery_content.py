"""Mail deliveries keyed by content too: template, data digest, when DATA began, why UNKNOWN

The Message-ID (the key) now comes from the job's identity and content, so a job id handed out
again (Node auto ids after Redis lost writes) is another delivery. Rows written before keep
their old Message-IDs and have no digest.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
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
    """Four nullable columns on maildelivery."""
    with op.batch_alter_table("maildelivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("template", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("digest", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("data_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("detail", sa.String(), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("maildelivery", schema=None) as batch_op:
        batch_op.drop_column("detail")
        batch_op.drop_column("data_at")
        batch_op.drop_column("digest")
        batch_op.drop_column("template")
