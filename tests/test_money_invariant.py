"""The money invariant over a mixed batch: what was captured minus what was refunded is the
order's total when it ends CONFIRMED or SHIPPED, and nothing when it ends CANCELLED, REJECTED
or RETURNED; stock is conserved."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from orderflow.contracts.inventory import ReservationStatus
from orderflow.contracts.order import OrderStatus, PaymentFailed, PaymentReceived, Shipment
from orderflow.contracts.payment import PaymentKind, PaymentStatus, payment_retry_workflow_id
from orderflow.contracts.review import ReviewDecision
from orderflow.db import Order, Payment, Product, Reservation
from payments.processor import WebhookProcessor
from payments.providers.stripe import parse_stripe, stripe_payment_succeeded
from payments.stripe_gateway import StripeGateway
from tests.fake_gateways import STRIPE_TEST_KEY
from tests.helpers import eventually, pending_order, started_workflow, wait_review, wait_status
from tests.stripe_system import DECLINED_CARD, GOOD_CARD, StripeSystem, card, make_default
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


def stripe_net(system: StripeSystem, order_id: str, since: datetime) -> tuple[int, int]:
    """(captured, refunded) for one order as localstripe itself holds them: every charge of the
    order's PaymentIntents (the checkout's and the retries' own, by metadata) and its refunds."""
    gateway = StripeGateway(STRIPE_TEST_KEY, api_base=system.localstripe.url)
    mine = [p for p in gateway.list_payments(since) if p.order_id == order_id]
    refunds = [
        r
        for p in mine
        for r in system.stripe.v1.refunds.list(params={"payment_intent": p.payment_id}).data
        if r.status == "succeeded"
    ]
    return sum(p.captured for p in mine), sum(int(r.amount) for r in refunds)


async def test_money_invariant_of_stripe_orders_read_from_localstripe(
    system: StripeSystem, catalogue: Catalogue, engine: Engine
) -> None:
    """A mixed batch of Stripe orders; the money is counted twice, at localstripe (its charges
    and refunds) and in our payments table, and both agree with where each order ended."""
    since = datetime.now(UTC) - timedelta(seconds=2)
    skus = catalogue(lamp=(45_000, 20))
    orders = system.orders

    async def run(plan: str) -> tuple[str, int]:
        order = await pending_order(orders, [(skus["lamp"], 1)])
        oid, total = order.id, order.state.total
        if plan == "declined-then-new-card":
            customer = system.stripe.v1.customers.create(params={"email": f"{oid}@example.com"})
            declining = card(system, DECLINED_CARD, customer.id)
            make_default(system, customer.id, declining)
            await orders.create_checkout(oid, customer=customer.id, payment_method=declining)
            await wait_status(orders, oid, "PAYMENT_RETRYING")
            make_default(system, customer.id, card(system, GOOD_CARD, customer.id))
            await wait_status(orders, oid, "CONFIRMED", timeout=40)
            return oid, total
        if plan == "cancel-unpaid":
            await orders.cancel(oid, "changed my mind")
            return oid, total
        checkout = await orders.create_checkout(oid, payment_method=card(system, GOOD_CARD))
        assert checkout.status == "succeeded", checkout
        await wait_status(orders, oid, "CONFIRMED")
        if plan == "ship":
            await orders.shipped(oid, Shipment("DTDC", oid))
        elif plan == "cancel-paid":
            await orders.cancel(oid, "changed my mind")
        elif plan == "return":
            await orders.shipped(oid, Shipment("DTDC", oid))
            await wait_status(orders, oid, "SHIPPED")
            await orders.request_return(oid, "does not fit")
            review = await wait_review(orders, oid)
            await orders.decide_review(review.review_id, ReviewDecision(True, "qa"))
        return oid, total

    plans = ["pay", "ship", "cancel-paid", "cancel-unpaid", "return", "declined-then-new-card"]
    done = await asyncio.gather(*(run(plan) for plan in plans))
    expected_end = {
        "pay": OrderStatus.CONFIRMED,
        "ship": OrderStatus.SHIPPED,
        "cancel-paid": OrderStatus.CANCELLED,
        "cancel-unpaid": OrderStatus.CANCELLED,
        "return": OrderStatus.RETURNED,
        "declined-then-new-card": OrderStatus.CONFIRMED,
    }
    for plan, (order_id, total) in zip(plans, done, strict=True):

        async def ended(order_id: str = order_id, plan: str = plan) -> OrderStatus | None:
            with Session(engine) as session:
                row = session.get(Order, order_id)
            return OrderStatus(row.status) if row and row.status == expected_end[plan] else None

        status = await eventually(ended, 60, f"{plan} order {order_id} {expected_end[plan]}")
        kept = total if status in KEEPS_MONEY else 0

        async def counted(order_id: str = order_id, kept: int = kept) -> tuple[int, int] | None:
            captured, refunded = await asyncio.to_thread(stripe_net, system, order_id, since)
            return (captured, refunded) if captured - refunded == kept else None

        captured, refunded = await eventually(
            counted, 20, f"{plan} order {order_id}: localstripe's net {kept}"
        )
        assert captured - refunded == kept == net_captured(engine, order_id), (
            plan,
            order_id,
            status,
            captured,
            refunded,
        )
        assert plan == "cancel-unpaid" or captured == total, (plan, order_id, captured)
