"""Money columns 64-bit: every amount BIGINT

0002 made the amounts INTEGER, which PostgreSQL keeps in 32 bits: 2^31 - 1 paise is about
₹2.1 crore, and a larger order, payment or webhook amount failed to store. SQLite's INTEGER
already holds 64 bits; its columns are declared BIGINT too, so both match the models.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column): every amount, in minor units of its currency
AMOUNTS = [
    ("product", "price"),
    ("order", "total"),
    ("orderitem", "unit_price"),
    ("invoice", "total"),
    ("payment", "amount"),
    ("webhookevent", "amount"),
]


def upgrade() -> None:
    """INTEGER → BIGINT (PostgreSQL rewrites each table once; no value changes)."""
    for table, column in AMOUNTS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
            )


def downgrade() -> None:
    """Back to INTEGER: fails on PostgreSQL while an amount is past 2^31 - 1."""
    for table, column in AMOUNTS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column, existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
            )
