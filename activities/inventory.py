"""Inventory side effects: release or ship a reservation exactly once."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio import activity

from orderflow.contracts.inventory import ReleaseInput, ReleaseResult, ReservationStatus, ShipInput
from orderflow.db import Product, Reservation


class InventoryActivities:
    """Moves stock between on-hand and reserved; each reservation row changes state once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn
    def release_reservation(self, data: ReleaseInput) -> ReleaseResult:
        """Return an order's reserved units to on-hand; already released lines are skipped."""
        return self._close(data.order_id, ReservationStatus.RELEASED, back_on_hand=True)

    @activity.defn
    def ship_reservation(self, data: ShipInput) -> ReleaseResult:
        """The reserved units left the warehouse: drop them from reserved."""
        return self._close(data.order_id, ReservationStatus.SHIPPED, back_on_hand=False)

    def _close(
        self, order_id: str, to_status: ReservationStatus, *, back_on_hand: bool
    ) -> ReleaseResult:
        lines = units = 0
        with Session(self.engine) as session:
            held = session.exec(
                select(Reservation)
                .where(
                    Reservation.order_id == order_id,
                    Reservation.status == ReservationStatus.RESERVED,
                )
                .order_by(col(Reservation.sku))  # the key order place_order locks products in
            ).all()
            for reservation in held:
                # the status guard makes a concurrent or repeated call a no-op for this row
                moved = session.execute(
                    update(Reservation)
                    .where(
                        col(Reservation.id) == reservation.id,
                        col(Reservation.status) == ReservationStatus.RESERVED,
                    )
                    .values(status=to_status, updated_at=datetime.now(UTC))
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                values = {"reserved": Product.reserved - reservation.quantity}
                if back_on_hand:
                    values["on_hand"] = Product.on_hand + reservation.quantity
                session.execute(
                    update(Product).where(col(Product.sku) == reservation.sku).values(**values)
                )
                lines += 1
                units += reservation.quantity
            session.commit()
        return ReleaseResult(order_id=order_id, released_lines=lines, released_units=units)
