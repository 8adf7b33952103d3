"""The money invariant over a mixed batch: what was captured minus what was refunded is the
order's total when it ends CONFIRMED or SHIPPED, and nothing when it ends CANCELLED, REJECTED
or RETURNED; stock is conserved."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from orderflow.contracts.inventory import ReservationStatus
from orderflow.contracts.order import OrderStatus, PaymentFailed, PaymentReceived, Shipment
from orderflow.contracts.payment import PaymentKind, PaymentStatus, payment_retry_workflow_id
from orderflow.contracts.review import ReviewDecision
from orderflow.db import Order, Payment, Product, Reservation
from payments.events import parse_stripe
from payments.processor import WebhookProcessor
from payments.samples import stripe_payment_succeeded
from tests.helpers import eventually, pending_order, started_workflow, wait_review, wait_status
from workers.temporal import Dependencies

Catalogue = Callable[..., dict[str, str]]
KEEPS_MONEY = {OrderStatus.CONFIRMED, OrderStatus.SHIPPED}
GIVES_IT_BACK = {OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.RETURNED}


def net_captured(engine: Engine, order_id: str) -> int:
    """Captured minus refunded, in minor units, from the payments table."""
    with Session(engine) as session:
        rows = session.exec(
            select(Payment).where(
                Payment.order_id == order_id, Payment.status == PaymentStatus.SUCCEEDED
            )
        ).all()
    return sum(p.amount if p.kind == PaymentKind.CAPTURE else -p.amount for p in rows)


async def test_money_and_stock_invariant_over_a_mixed_batch(
    env: WorkflowEnvironment,
    orders: OrderClient,
    engine: Engine,
    deps: Dependencies,
    catalogue: Catalogue,
) -> None:
    start = {"mug": 40, "tv": 6}
    skus = catalogue(mug=(30_000, start["mug"]), tv=(6_000_000, start["tv"]))
    webhooks = WebhookProcessor(orders, engine)

    async def pay_by_webhook(order_id: str, total: int) -> None:
        event = parse_stripe(stripe_payment_succeeded(order_id, total))
        for _ in range(2):  # the gateway redelivers: one payment
            await webhooks.apply(event)

    async def pay(order_id: str, total: int) -> None:
        ack = await orders.payment_received(
            order_id, PaymentReceived(f"pay-{order_id}", total, currency="INR")
        )
        assert ack.accepted, ack.reason

    async def decide(order_id: str, approve: bool) -> None:
        review = await wait_review(orders, order_id)
        await orders.decide_review(review.review_id, ReviewDecision(approve, "qa"))

    async def run(plan: str, sku: str, quantity: int) -> tuple[str, int]:
        order = await pending_order(orders, [(skus[sku], quantity)])
        oid, total = order.id, order.state.total
        if plan == "pay":
            await pay_by_webhook(oid, total)
        elif plan == "pay-ship":
            await pay(oid, total)
            await wait_status(orders, oid, "CONFIRMED")
            await orders.shipped(oid, Shipment("DTDC", oid))
        elif plan == "decline-retry":
            deps.gateway.set_rule(oid, fail_captures=1)  # type: ignore[attr-defined]
            await orders.payment_failed(oid, PaymentFailed(f"pf-{oid}", "card declined"))
            retry = await started_workflow(
                env.client, payment_retry_workflow_id(oid, PaymentKind.CAPTURE)
            )
            await env.fast_forward(retry)
        elif plan == "decline-all":
            deps.gateway.set_rule(oid, decline_all=True)  # type: ignore[attr-defined]
            await orders.payment_failed(oid, PaymentFailed(f"pf-{oid}", "card declined"))
            retry = await started_workflow(
                env.client, payment_retry_workflow_id(oid, PaymentKind.CAPTURE)
            )
            await env.fast_forward(retry)
        elif plan == "cancel-paid":
            await pay_by_webhook(oid, total)
            await wait_status(orders, oid, "CONFIRMED")
            await orders.cancel(oid, "changed my mind")
        elif plan == "cancel-unpaid":
            await orders.cancel(oid, "changed my mind")
        elif plan in ("review-approve", "review-reject"):
            await pay(oid, total)
            await decide(oid, plan == "review-approve")
        elif plan == "return":
            await pay(oid, total)
            await wait_status(orders, oid, "CONFIRMED")
            await orders.shipped(oid, Shipment("DTDC", oid))
            await wait_status(orders, oid, "SHIPPED")
            await orders.request_return(oid, "does not fit")
            await decide(oid, True)
        return oid, total

    plans = [
        ("pay", "mug", 2), ("pay-ship", "mug", 1), ("decline-retry", "mug", 3),
        ("decline-all", "mug", 1), ("cancel-paid", "mug", 2), ("cancel-unpaid", "mug", 1),
        ("review-approve", "tv", 1), ("review-reject", "tv", 1), ("return", "mug", 1),
    ] * 2  # fmt: skip
    done = await asyncio.gather(*(run(plan, sku, n) for plan, sku, n in plans))

    settled = {OrderStatus.CONFIRMED, OrderStatus.SHIPPED, *GIVES_IT_BACK}

    async def final(plan: str, order_id: str) -> OrderStatus:
        seen: list[object] = []

        async def ended() -> OrderStatus | None:
            state = await orders.status(order_id)
            with Session(engine) as session:
                row = session.get(Order, order_id)
            seen[:] = [state.status, row.status if row else None, state.history[-1].note]
            if row is None or row.status not in settled:
                return None
            # a return is decided after the order's own workflow ended SHIPPED
            returned = row.status == OrderStatus.RETURNED and state.status == OrderStatus.SHIPPED
            return OrderStatus(row.status) if returned or row.status == state.status else None

        return await eventually(ended, 60, lambda: f"{plan} order {order_id} settled: {seen}")

    outcomes = {}
    for (plan, _, _), (order_id, total) in zip(plans, done, strict=True):
        status = await final(plan, order_id)
        outcomes[plan] = status
        expected = total if status in KEEPS_MONEY else 0
        assert net_captured(engine, order_id) == expected, (plan, order_id, status)
    assert outcomes["return"] == OrderStatus.RETURNED
    assert outcomes["decline-all"] == OrderStatus.CANCELLED
    assert outcomes["review-reject"] == OrderStatus.CANCELLED

    with Session(engine) as session:
        for name, sku in skus.items():
            product = session.get(Product, sku)
            assert product is not None
            shipped = session.exec(
                select(func.coalesce(func.sum(Reservation.quantity), 0)).where(
                    col(Reservation.sku) == sku,
                    col(Reservation.status) == ReservationStatus.SHIPPED,
                )
            ).one()
            assert product.on_hand + product.reserved + shipped == start[name], name
