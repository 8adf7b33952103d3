"""ManualReviewWorkflow: high-value orders and returns wait for an admin's decision."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.client import OrderClient
from orderflow.contracts.order import PaymentReceived, Shipment
from orderflow.contracts.review import ReviewDecision
from orderflow.db import Order, Payment, Review
from orderflow.errors import UnknownReviewError
from tests.helpers import payments, pending_order, stock, wait_review, wait_status


async def _paid_high_value_order(
    orders: OrderClient, catalogue: Callable[..., dict[str, str]]
) -> tuple[str, str]:
    skus = catalogue(tv=(6_500_000, 2))
    order_id = (await pending_order(orders, [(skus["tv"], 1)])).id
    ack = await orders.payment_received(
        order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=6_500_000, currency="INR")
    )
    assert ack.accepted
    await wait_status(orders, order_id, "IN_REVIEW")
    return order_id, skus["tv"]


async def test_high_value_order_approved_is_confirmed(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    order_id, _ = await _paid_high_value_order(orders, catalogue)
    review = await wait_review(orders, order_id)
    assert review.kind == "HIGH_VALUE" and "₹65,000.00" in review.reason
    outcome = await orders.decide_review(
        review.review_id, ReviewDecision(approve=True, reviewer="asha", note="ok")
    )
    assert outcome.approved and outcome.reviewer == "asha"
    await wait_status(orders, order_id, "CONFIRMED")
    with Session(engine) as session:
        row = session.get(Review, review.review_id)
        assert row is not None and row.status == "APPROVED" and row.reviewer == "asha"
    assert review.review_id not in [r.review_id for r in await orders.pending_reviews()]
    with pytest.raises(UnknownReviewError):
        await orders.decide_review(review.review_id, ReviewDecision(approve=False, reviewer="bob"))


async def test_high_value_order_rejected_is_refunded_released_cancelled(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    order_id, sku = await _paid_high_value_order(orders, catalogue)
    assert stock(engine, sku) == (1, 1)
    review = await wait_review(orders, order_id)
    await orders.decide_review(
        review.review_id, ReviewDecision(approve=False, reviewer="ravi", note="fraud risk")
    )
    result = await orders.result(order_id)
    assert result.status == "CANCELLED"
    assert payments(engine, order_id) == [
        ("capture", "succeeded", 6_500_000),
        ("refund", "succeeded", 6_500_000),
    ]
    assert stock(engine, sku) == (2, 0)
    note = (await orders.status(order_id)).history[-1].note
    assert "rejected by ravi: fraud risk" in note and "refunded" in note


async def test_return_request_approved_refunds_the_payment_the_order_accepted_by_its_id(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    """By its id: a real gateway given none picks the order's newest payment, which after a
    refunded duplicate capture is not the one kept; reconciliation needs refund_of too."""
    skus = catalogue(shoe=(250_000, 3))
    order_id = (await pending_order(orders, [(skus["shoe"], 1)])).id
    await orders.payment_received(
        order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=250_000, currency="INR")
    )
    await wait_status(orders, order_id, "CONFIRMED")
    await orders.shipped(order_id, Shipment(carrier="DTDC", tracking_number="X1"))
    assert (await orders.result(order_id)).status == "SHIPPED"
    review_id = await orders.request_return(order_id, "wrong size")
    review = await wait_review(orders, order_id)
    assert review.review_id == review_id and review.kind == "RETURN"
    await orders.decide_review(review_id, ReviewDecision(approve=True, reviewer="meena"))
    handle = orders.client.get_workflow_handle(review_id)
    await handle.result()
    assert payments(engine, order_id)[-1] == ("refund", "succeeded", 250_000)
    with Session(engine) as session:
        order = session.get(Order, order_id)
        assert order is not None and order.status == "RETURNED"
        refunds = session.exec(
            select(Payment).where(Payment.order_id == order_id, Payment.kind == "refund")
        ).all()
    assert [(r.refund_of, r.amount) for r in refunds] == [(f"pay-{order_id}", 250_000)]


async def test_decision_needs_a_reviewer(
    orders: OrderClient, catalogue: Callable[..., dict[str, str]]
) -> None:
    order_id, _ = await _paid_high_value_order(orders, catalogue)
    review = await wait_review(orders, order_id)
    with pytest.raises(UnknownReviewError):
        await orders.decide_review(review.review_id, ReviewDecision(approve=True, reviewer=" "))
    assert review.review_id in [r.review_id for r in await orders.pending_reviews()]


async def test_only_a_shipped_order_can_be_returned(
    orders: OrderClient, catalogue: Callable[..., dict[str, str]]
) -> None:
    from orderflow.errors import InvalidOrderError, UnknownOrderError

    skus = catalogue(belt=(90_000, 2))
    order_id = (await pending_order(orders, [(skus["belt"], 1)])).id
    await orders.payment_received(
        order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=90_000, currency="INR")
    )
    await wait_status(orders, order_id, "CONFIRMED")
    with pytest.raises(
        InvalidOrderError, match=f"order '{order_id}' is CONFIRMED.*cancel it instead"
    ):
        await orders.request_return(order_id, "changed my mind")
    with pytest.raises(UnknownOrderError, match="no-such-order"):
        await orders.request_return("no-such-order", "?")
