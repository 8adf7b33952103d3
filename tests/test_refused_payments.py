"""A payment the order refuses and gives back has both its rows (issue 18 hole 10c).

Real activities on the session's database, the simulated gateway: what the payments table says
was captured minus what it says was refunded is 0 for an order that kept nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.client import OrderClient
from orderflow.contracts.order import OrderStatus, PaymentReceived
from orderflow.contracts.payment import PaymentKind, PaymentStatus
from orderflow.db import Payment
from tests.helpers import eventually, new_order_id, payments, start_with_payment


def net_captured(engine: Engine, order_id: str) -> int:
    """Captured minus refunded, in minor units, over the order's succeeded payment rows."""
    with Session(engine) as session:
        rows = session.exec(
            select(Payment).where(
                Payment.order_id == order_id, Payment.status == PaymentStatus.SUCCEEDED
            )
        ).all()
    sign = {PaymentKind.CAPTURE: 1, PaymentKind.REFUND: -1}
    return sum(sign[PaymentKind(p.kind)] * p.amount for p in rows)


async def test_a_refused_early_payment_and_its_refund_both_have_their_rows(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    """₹1.00 sent with the start of a ₹450.00 order is refused and refunded."""
    skus = catalogue(lamp=(45_000, 5))
    order_id = new_order_id()
    early = PaymentReceived(f"early-{order_id}", 100, currency="INR")
    await start_with_payment(orders, order_id, [(skus["lamp"], 1)], early)

    async def refunded() -> bool:
        return (await orders.status(order_id)).history[-1].note.startswith("refunded")

    await eventually(refunded, 20, "the early ₹1.00 refunded")
    assert payments(engine, order_id) == [
        ("capture", "succeeded", 100),
        ("refund", "succeeded", 100),
    ]
    assert net_captured(engine, order_id) == 0


async def test_a_payment_for_an_order_rejected_for_stock_and_its_refund_have_their_rows(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    """Paid before the stock check answered, and there was no stock: refunded."""
    skus = catalogue(vase=(30_000, 0))
    order_id = new_order_id()
    paid = PaymentReceived(f"pay-{order_id}", 30_000, currency="INR")
    handle = await start_with_payment(orders, order_id, [(skus["vase"], 1)], paid)
    assert (await handle.result()).status == OrderStatus.REJECTED
    assert payments(engine, order_id) == [
        ("capture", "succeeded", 30_000),
        ("refund", "succeeded", 30_000),
    ]
    assert net_captured(engine, order_id) == 0
