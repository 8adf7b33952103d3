"""ManualReviewWorkflow: high-value orders and returns wait for an admin's decision."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from app.cli import app as cli
from app.client import OrderClient
from orderflow.contracts.order import PaymentReceived, Shipment
from orderflow.contracts.review import ReviewDecision
from orderflow.db import Order, Payment, Review
from orderflow.errors import InvalidOrderError, UnknownOrderError, UnknownReviewError
from tests.helpers import (
    new_order_id,
    own_namespace,
    payments,
    pending_order,
    stock,
    wait_review,
    wait_status,
)
from workers.temporal import Dependencies, build_workers


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


async def test_a_return_of_a_shipped_order_whose_workflow_history_is_gone_refunds_its_payment(
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
    deps: Dependencies,
) -> None:
    """The namespace keeps a closed workflow 72 h; a return asked on day 4 finds no workflow.

    The payment comes from the payments table: the capture the order kept, not a duplicate
    capture that was refunded (a retry's, recorded after the kept one).
    """
    skus = catalogue(coat=(1_250_000, 2))
    order_id = (await pending_order(orders, [(skus["coat"], 1)])).id
    kept = f"pay-{order_id}"
    await orders.payment_received(
        order_id, PaymentReceived(payment_id=kept, amount=1_250_000, currency="INR")
    )
    await wait_status(orders, order_id, "CONFIRMED")
    await orders.shipped(order_id, Shipment(carrier="DTDC", tracking_number="X9"))
    assert (await orders.result(order_id)).status == "SHIPPED"
    with Session(engine) as session:  # what a duplicate capture given back leaves behind
        for kind, payment_id, refund_of in [
            ("capture", f"dup-{order_id}", ""),
            ("refund", f"re-dup-{order_id}", f"dup-{order_id}"),
        ]:
            session.add(
                Payment(
                    order_id=order_id,
                    provider="simulated",
                    payment_id=payment_id,
                    kind=kind,
                    amount=1_250_000,
                    currency="INR",
                    status="succeeded",
                    refund_of=refund_of,
                )
            )
        session.commit()
    async with where_its_history_is_gone(orders, deps) as later:
        with pytest.raises(UnknownOrderError):
            await later.status(order_id)
        review_id = await return_from_the_cli(later, order_id, "too warm")
        review = await wait_review(later, order_id)
        assert review.review_id == review_id and review.kind == "RETURN"
        await later.decide_review(review_id, ReviewDecision(approve=True, reviewer="meena"))
        await later.client.get_workflow_handle(review_id).result()
    with Session(engine) as session:
        order = session.get(Order, order_id)
        refunds = session.exec(
            select(Payment).where(
                Payment.order_id == order_id, Payment.kind == "refund", Payment.refund_of == kept
            )
        ).all()
    assert order is not None and order.status == "RETURNED"
    assert [(r.status, r.amount, r.currency) for r in refunds] == [("succeeded", 1_250_000, "INR")]


async def test_a_return_whose_order_kept_two_captures_and_lost_its_workflow_names_both(
    orders: OrderClient, engine: Engine
) -> None:
    """Which capture was kept is not in the table: say so rather than refund a guess."""
    order_id = new_order_id()
    with Session(engine) as session:
        session.add(
            Order(
                id=order_id,
                customer_id="c",
                email="c@example.com",
                status="SHIPPED",
                total=90_000,
                currency="INR",
            )
        )
        for payment_id in (f"a-{order_id}", f"b-{order_id}"):
            session.add(
                Payment(
                    order_id=order_id,
                    provider="simulated",
                    payment_id=payment_id,
                    kind="capture",
                    amount=90_000,
                    currency="INR",
                    status="succeeded",
                )
            )
        session.commit()
    with pytest.raises(InvalidOrderError, match=f"a-{order_id}, b-{order_id}.*by hand"):
        await orders.request_return(order_id, "?")


async def return_from_the_cli(orders: OrderClient, order_id: str, reason: str) -> str:
    """`orderflow orders return ORDER --reason …` against this client's namespace and database."""
    assert orders.engine is not None
    env = {
        "ORDERFLOW_TEMPORAL_ADDRESS": orders.client.service_client.config.target_host,
        "ORDERFLOW_TEMPORAL_NAMESPACE": orders.client.namespace,
        "ORDERFLOW_DATABASE_URL": orders.engine.url.render_as_string(hide_password=False),
    }
    args = ["orders", "return", order_id, "--reason", reason]
    # on a thread: the command runs its own event loop
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert result.exit_code == 0, result.output
    opened = re.fullmatch(r"review (\S+) opened\n", result.output)
    assert opened, result.output
    return opened.group(1)


@asynccontextmanager
async def where_its_history_is_gone(
    orders: OrderClient, deps: Dependencies
) -> AsyncIterator[OrderClient]:
    """An order client, with the workers, on a namespace that has never heard of the order.

    What a client sees once the namespace's retention deleted a closed workflow (72 h): the
    workflow id is unknown. (Deleting it through the API takes the dev server about 30 s.)
    """
    client = await own_namespace(orders.client, "forgot")
    running = build_workers(client, orders.settings, deps)
    tasks = [asyncio.create_task(w.run()) for w in running]
    try:
        yield OrderClient(client, orders.settings, orders.engine)
    finally:
        await asyncio.gather(*(w.shutdown() for w in running))
        await asyncio.gather(*tasks, return_exceptions=True)


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
