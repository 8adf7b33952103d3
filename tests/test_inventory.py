"""Inventory under concurrency: reservations, releases and stock sync never lose an update."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from activities.order import OrderActivities
from activities.stock_sync import StockSyncActivities
from orderflow.contracts.order import OrderInput, OrderLine
from orderflow.db import Product
from tests.helpers import eventually, stock

ORDERS = 50
LAST_UNITS = 10


class CountingErp:
    """An ERP whose physical count of one SKU stays at `units` (the warehouse holds them all)."""

    name = "counting"

    def __init__(self, sku: str, units: int) -> None:
        self.counts = {sku: units}

    def push_order(self, order_id: str, payload: dict[str, Any]) -> str:
        """Not used here."""
        return order_id

    def stock_counts(self) -> dict[str, int]:
        """The physical count: on hand plus reserved, as the warehouse sees it."""
        return dict(self.counts)


async def test_stock_sync_during_a_reservation_keeps_the_reservation(
    engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    """A delivery of 2 is counted (ERP: 12) while an order reserves 1 of the 10 on hand.

    The order's transaction holds the product row; stock sync must not write a value it
    computed before that order committed (on_hand 12 with 1 reserved would sell 13 of 12).
    """
    sku = catalogue(delivered=(49_900, 10))["delivered"]
    sync = StockSyncActivities(engine, CountingErp(sku, 12))
    with engine.connect() as order_tx:
        order_tx.execute(
            update(Product)
            .where(col(Product.sku) == sku)
            .values(on_hand=Product.on_hand - 1, reserved=Product.reserved + 1)
        )
        syncing = asyncio.create_task(asyncio.to_thread(sync.sync_stock))
        if engine.dialect.name == "postgresql":  # SQLite's sync waits at BEGIN IMMEDIATE instead
            await eventually(lambda: _waits_for_a_row_lock(engine), what="stock sync blocked")
        order_tx.commit()
    await asyncio.wait_for(syncing, 30)
    assert stock(engine, sku) == (11, 1)


async def _waits_for_a_row_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


def test_fifty_parallel_orders_for_the_last_ten_units_while_stock_sync_runs_reserve_exactly_ten(
    engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    sku = catalogue(last=(49_900, LAST_UNITS))["last"]
    erp = CountingErp(sku, LAST_UNITS)
    orders = OrderActivities(engine, erp)
    sync = StockSyncActivities(engine, erp)
    start = threading.Barrier(ORDERS + 1)
    placed = threading.Event()
    syncs = 0

    def place(i: int) -> bool:
        start.wait()
        order = OrderInput(
            order_id=f"race-{uuid.uuid4().hex[:8]}-{i}",
            customer_id="race",
            email="race@example.com",
            items=[OrderLine(sku=sku, quantity=1)],
        )
        return orders.place_order(order).reserved

    def keep_syncing() -> None:
        nonlocal syncs
        start.wait()
        while not placed.is_set() or syncs < 3:
            sync.sync_stock()
            syncs += 1

    with ThreadPoolExecutor(max_workers=ORDERS + 1) as pool:
        syncing = pool.submit(keep_syncing)
        results = list(pool.map(place, range(ORDERS)))
        placed.set()
        syncing.result()

    on_hand, reserved = stock(engine, sku)
    assert (sum(results), reserved, on_hand) == (LAST_UNITS, LAST_UNITS, 0), (
        f"{sum(results)} orders reserved, {reserved} units reserved, {on_hand} on hand "
        f"after {syncs} stock syncs; the warehouse holds {LAST_UNITS}"
    )
