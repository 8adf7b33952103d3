"""Stock sync activity: on-hand stock aligned with the ERP's physical counts."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
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
        """Align on-hand with the ERP's physical counts (physical = on-hand + reserved)."""
        counts = self.erp.stock_counts()
        with Session(self.engine) as session:
            products = session.exec(select(Product)).all()
            if counts is None:
                return StockSyncResult(skus_checked=len(products), skus_changed=0)
            changed = 0
            for product in products:
                physical = counts.get(product.sku)
                if physical is None:
                    continue
                on_hand = max(physical - product.reserved, 0)
                if on_hand != product.on_hand:
                    product.on_hand = on_hand
                    session.add(product)
                    changed += 1
            session.commit()
        return StockSyncResult(skus_checked=len(products), skus_changed=changed)
