"""Stock sync activity: on-hand stock aligned with the ERP's physical counts."""

from __future__ import annotations

from sqlalchemy import case, literal, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio import activity

from activities.erp import Erp
from orderflow.contracts.stock_sync import StockSyncResult
from orderflow.db import Product


class StockSyncActivities:
    """Reads the ERP's counts and writes on-hand; reservations are left as they are."""

    def __init__(self, engine: Engine, erp: Erp) -> None:
        self.engine = engine
        self.erp = erp

    @activity.defn
    def sync_stock(self) -> StockSyncResult:
        """Align on-hand with the ERP's physical counts (physical = on-hand + reserved).

        One UPDATE per SKU computes on-hand from the row's reserved as it is when written, so a
        reservation committed meanwhile is never overwritten (PostgreSQL re-reads the locked row).
        SKUs go in key order, the order place_order locks them in, so the two never deadlock.
        """
        counts = self.erp.stock_counts()
        with Session(self.engine) as session:
            skus = session.exec(select(Product.sku).order_by(col(Product.sku))).all()
            if counts is None:
                return StockSyncResult(skus_checked=len(skus), skus_changed=0)
            changed = 0
            for sku in skus:
                physical = counts.get(sku)
                if physical is None:
                    continue
                free = literal(physical) - col(Product.reserved)
                on_hand = case((free > 0, free), else_=0)
                moved = session.execute(
                    update(Product)
                    .where(col(Product.sku) == sku, col(Product.on_hand) != on_hand)
                    .values(on_hand=on_hand)
                )
                changed += moved.rowcount  # type: ignore[attr-defined]
            session.commit()
        return StockSyncResult(skus_checked=len(skus), skus_changed=changed)
