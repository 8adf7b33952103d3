"""Money as integer minor units: amounts × 10^exponent, integer columns; payment currency and
refund_of

Every amount was a float in major units (rupees); it becomes an integer number of the
currency's minor units (paise). Amounts are converted with their row's currency (the order's
for rows without one); products, which carry none, are taken to be in a two-decimal currency
(the shop's INR) — re-import the catalogue if the shop sells in a zero-decimal one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# orderflow.money's lists, frozen here: a migration must not change when the code does
ZERO_DECIMAL = "('BIF','CLP','DJF','GNF','JPY','KMF','KRW','MGA','PYG','RWF','UGX','VND','VUV','XAF','XOF','XPF')"
THREE_DECIMAL = "('BHD','IQD','JOD','KWD','LYD','OMR','TND')"


def _scale(currency_sql: str) -> str:
    return (
        f"(CASE WHEN UPPER({currency_sql}) IN {ZERO_DECIMAL} THEN 1"
        f" WHEN UPPER({currency_sql}) IN {THREE_DECIMAL} THEN 1000 ELSE 100 END)"
    )


ORDER_CURRENCY = "COALESCE((SELECT o.currency FROM \"order\" o WHERE o.id = {table}.order_id), '')"
# (table, column, SQL of the row's currency)
AMOUNTS = [
    ("product", "price", "'INR'"),
    ("order", "total", '"order".currency'),
    ("orderitem", "unit_price", ORDER_CURRENCY.format(table="orderitem")),
    ("invoice", "total", ORDER_CURRENCY.format(table="invoice")),
    ("payment", "amount", ORDER_CURRENCY.format(table="payment")),
    ("webhookevent", "amount", "webhookevent.currency"),
]


def upgrade() -> None:
    """Convert every amount to minor units, then make the columns integers."""
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("currency", sa.String(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("refund_of", sa.String(), nullable=False, server_default=""))
        batch_op.create_index(batch_op.f("ix_payment_refund_of"), ["refund_of"], unique=False)
    op.execute(f"UPDATE payment SET currency = {ORDER_CURRENCY.format(table='payment')}")
    for table, column, currency in AMOUNTS:
        quoted = f'"{table}"'
        op.execute(f"UPDATE {quoted} SET {column} = ROUND({column} * {_scale(currency)})")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.Float(),
                type_=sa.Integer(),
                existing_nullable=False,
                postgresql_using=f"{column}::integer",
            )


def downgrade() -> None:
    """Back to floats in major units."""
    for table, column, currency in AMOUNTS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column, existing_type=sa.Integer(), type_=sa.Float(), existing_nullable=False
            )
        op.execute(f'UPDATE "{table}" SET {column} = {column} * 1.0 / {_scale(currency)}')
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_refund_of"))
        batch_op.drop_column("refund_of")
        batch_op.drop_column("currency")
