"""Record the golden histories: the main path of every workflow type, run once on real servers.

Run by hand, never by `make test` (the file name is not test_*.py, so pytest skips it unless named):

    .venv/bin/pytest -q -p no:cacheprovider tests/histories/record.py            # write missing files
    .venv/bin/pytest -q -p no:cacheprovider tests/histories/record.py -k returned

Each path drives orders through the session fixtures of tests/conftest.py (the time-skipping dev
server, Redis, the database, the fake ERP, the real workers) and writes the history of every
workflow it ran, children included, to tests/histories/<path>.<WorkflowType>.json.
tests/test_replay.py replays each file against the current code on every run, and fails when a
workflow type of workflows/ has no file. The scheduled workflows (daily report, stock sync, queue
cleanup, payment reconciliation) are recorded at the end, started as their schedules start them;
the branches before each patch are in record_prepatch.py. Every recording since the codec is
encrypted: name it with ORDERFLOW_RECORD_RELEASE=codec, e.g.

    ORDERFLOW_RECORD_RELEASE=codec .venv/bin/pytest -q -p no:cacheprovider \
        tests/histories/record.py -k "sqlite and scheduled"

A golden history stands for orders already running in production: an existing file is never
overwritten (set ORDERFLOW_RECORD_OVERWRITE=1 only to re-record a file that no release ran).
A changed workflow gets a new path name here and a new file, next to the old one.
See docs/VERSIONING.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from temporalio.client import ScheduleActionStartWorkflow, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from app.schedules import maintenance_schedules, schedules
from orderflow.contracts.cleanup import QUEUE_CLEANUP_SCHEDULE_ID
from orderflow.contracts.order import (
    OrderResult,
    PaymentFailed,
    PaymentReceived,
    Shipment,
)
from orderflow.contracts.reconciliation import PAYMENT_RECONCILIATION_SCHEDULE_ID
from orderflow.contracts.reports import DAILY_REPORT_SCHEDULE_ID
from orderflow.contracts.review import ReviewDecision
from orderflow.contracts.stock_sync import STOCK_SYNC_SCHEDULE_ID
from orderflow.settings import Settings
from tests.helpers import (
    eventually,
    new_order_id,
    pending_order,
    start_with_payment,
    started_workflow,
    wait_review,
    wait_status,
)
from tests.histories.recording import pay_and_ship, save
from workers.temporal import Dependencies
from workflows.order import OrderWorkflow

Catalogue = Callable[..., dict[str, str]]


async def test_paid(orders: OrderClient, catalogue: Catalogue) -> None:
    skus = catalogue(shirt=(79_900, 10))
    order = await pending_order(orders, [(skus["shirt"], 2)])
    await pay_and_ship(orders, order.id, 159_800)
    assert (await order.handle.result()).status == "SHIPPED"
    await save(orders.client, "paid", order.handle.id)


async def test_expired(env: WorkflowEnvironment, orders: OrderClient, catalogue: Catalogue) -> None:
    skus = catalogue(mug=(25_000, 5))
    order = await pending_order(orders, [(skus["mug"], 3)])
    await env.fast_forward(order.handle, timedelta(minutes=61))
    assert (await order.handle.result()).status == "CANCELLED"
    await save(orders.client, "expired", order.handle.id, f"inventory-release-{order.id}")


async def test_declined_then_retried(
    env: WorkflowEnvironment, orders: OrderClient, deps: Dependencies, catalogue: Catalogue
) -> None:
    skus = catalogue(bag=(200_000, 5))
    order = await pending_order(orders, [(skus["bag"], 1)])
    deps.gateway.set_rule(order.id, fail_captures=1)  # type: ignore[attr-defined]
    await orders.payment_failed(order.id, PaymentFailed(payment_id="pf-1", reason="declined"))
    retry = await started_workflow(env.client, f"payment-capture-{order.id}")
    await env.fast_forward(retry)
    await wait_status(orders, order.id, "CONFIRMED")
    await orders.shipped(order.id, Shipment(carrier="DTDC", tracking_number="D1"))
    assert (await order.handle.result()).status == "SHIPPED"
    await save(orders.client, "declined-then-retried", order.handle.id, retry.id)


async def test_reviewed(orders: OrderClient, catalogue: Catalogue) -> None:
    skus = catalogue(tv=(6_500_000, 2))
    order = await pending_order(orders, [(skus["tv"], 1)])
    ack = await orders.payment_received(
        order.id, PaymentReceived(f"pay-{order.id}", 6_500_000, currency="INR")
    )
    assert ack.accepted, ack.reason
    review = await wait_review(orders, order.id)
    await orders.decide_review(review.review_id, ReviewDecision(approve=True, reviewer="asha"))
    await wait_status(orders, order.id, "CONFIRMED")
    await orders.shipped(order.id, Shipment(carrier="BlueDart", tracking_number="BD2"))
    assert (await order.handle.result()).status == "SHIPPED"
    await save(orders.client, "reviewed", order.handle.id, review.review_id)


async def test_cancelled_with_refund(orders: OrderClient, catalogue: Catalogue) -> None:
    skus = catalogue(chair=(450_000, 3))
    order = await pending_order(orders, [(skus["chair"], 1)])
    ack = await orders.payment_received(
        order.id, PaymentReceived(f"pay-{order.id}", 450_000, currency="INR")
    )
    assert ack.accepted, ack.reason
    await wait_status(orders, order.id, "CONFIRMED")
    await orders.cancel(order.id, "customer cancelled before shipping")
    assert (await order.handle.result()).status == "CANCELLED"
    await save(
        orders.client,
        "cancelled-with-refund",
        order.handle.id,
        f"payment-refund-{order.id}",
        f"inventory-release-{order.id}",
    )


async def test_returned(orders: OrderClient, catalogue: Catalogue) -> None:
    skus = catalogue(shoe=(250_000, 3))
    order = await pending_order(orders, [(skus["shoe"], 1)])
    await pay_and_ship(orders, order.id, 250_000)
    assert (await order.handle.result()).status == "SHIPPED"
    review_id = await orders.request_return(order.id, "wrong size")
    await wait_review(orders, order.id)
    await orders.decide_review(review_id, ReviewDecision(approve=True, reviewer="meena"))
    await save(orders.client, "returned", order.handle.id, review_id, f"payment-refund-{order.id}")


async def start_with_early_payment(
    orders: OrderClient, catalogue: Catalogue, price: int, paid: int
) -> WorkflowHandle[OrderWorkflow, OrderResult]:
    """An order of one item at `price`, `paid` arriving before the stock check."""
    skus = catalogue(clock=(price, 3))
    order_id = new_order_id()
    payment = PaymentReceived(payment_id=f"early-{order_id}", amount=paid, currency="INR")
    return await start_with_payment(orders, order_id, [(skus["clock"], 1)], payment)


@pytest.mark.skip(reason="recorded at 359b01b, before the early-payment-amount-check patch")
async def test_early_short_payment(orders: OrderClient, catalogue: Catalogue) -> None:
    """The old behaviour, kept as a running order of that release: ₹1.00 confirms ₹1,998."""
    handle = await start_with_early_payment(orders, catalogue, price=199_800, paid=100)
    order_id = handle.id.removeprefix("order-")
    await wait_status(orders, order_id, "CONFIRMED")  # the defect this path records
    await orders.shipped(order_id, Shipment(carrier="DTDC", tracking_number="D2"))
    assert (await handle.result()).status == "SHIPPED"
    await save(orders.client, "early-short-payment", handle.id)


async def test_early_short_payment_refused(orders: OrderClient, catalogue: Catalogue) -> None:
    """The patched behaviour: the ₹1.00 is refunded, the full payment confirms, the order ships."""
    handle = await start_with_early_payment(orders, catalogue, price=199_800, paid=100)
    order_id = handle.id.removeprefix("order-")

    async def refunded() -> bool:
        return (await orders.status(order_id)).history[-1].note.startswith("refunded")

    await eventually(refunded, 20, f"the early payment of order {order_id} refunded")
    await pay_and_ship(orders, order_id, 1998.0)
    assert (await handle.result()).status == "SHIPPED"
    await save(
        orders.client, "early-short-payment-refused", handle.id, f"payment-refund-{order_id}"
    )


async def refused_then_paid(orders: OrderClient, catalogue: Catalogue, path: str) -> None:
    """The early ₹1.00 refused and refunded, the full payment confirms, the order ships; saved."""
    handle = await start_with_early_payment(orders, catalogue, price=199_800, paid=100)
    order_id = handle.id.removeprefix("order-")

    async def refunded() -> bool:
        return (await orders.status(order_id)).history[-1].note.startswith("refunded")

    await eventually(refunded, 20, f"the early payment of order {order_id} refunded")
    await pay_and_ship(orders, order_id, 199_800)
    assert (await handle.result()).status == "SHIPPED"
    await save(orders.client, path, handle.id, f"payment-refund-{order_id}")


async def test_early_short_payment_recorded(orders: OrderClient, catalogue: Catalogue) -> None:
    """Issue 18: the refused ₹1.00 gets its payment row before its refund (marker
    refused-payment-recorded); the full payment confirms, the order ships."""
    await refused_then_paid(orders, catalogue, "early-short-payment-recorded")


async def test_early_short_payment_at_start(orders: OrderClient, catalogue: Catalogue) -> None:
    """Issue 18: the same path with every patch decided as the order starts (marker
    patches-decided-at-start, and no other marker)."""
    await refused_then_paid(orders, catalogue, "early-short-payment-at-start")


async def test_manual_capture(orders: OrderClient, catalogue: Catalogue) -> None:
    """An authorisation (manual capture): reviewed, then captured for the total, shipped."""
    skus = catalogue(tv=(6_500_000, 2))
    order = await pending_order(orders, [(skus["tv"], 1)])
    held = PaymentReceived(f"pi_held_{order.id}", 6_600_000, authorised_only=True, currency="INR")
    ack = await orders.payment_received(order.id, held)
    assert ack.accepted, ack.reason
    review = await wait_review(orders, order.id)
    await orders.decide_review(review.review_id, ReviewDecision(approve=True, reviewer="asha"))
    await wait_status(orders, order.id, "CONFIRMED")
    await orders.shipped(order.id, Shipment(carrier="BlueDart", tracking_number="BD3"))
    assert (await order.handle.result()).status == "SHIPPED"
    await save(orders.client, "manual-capture", order.handle.id, f"payment-capture-{order.id}")


async def test_manual_capture_released(orders: OrderClient, catalogue: Catalogue) -> None:
    """An authorisation below the total refused and released, then one cancelled in review."""
    skus = catalogue(tv=(6_500_000, 2))
    order = await pending_order(orders, [(skus["tv"], 1)])
    short = PaymentReceived(f"pi_short_{order.id}", 100, authorised_only=True, currency="INR")
    assert not (await orders.payment_received(order.id, short)).accepted
    held = PaymentReceived(f"pi_held_{order.id}", 6_500_000, authorised_only=True, currency="INR")
    assert (await orders.payment_received(order.id, held)).accepted
    await wait_review(orders, order.id)
    await orders.cancel(order.id, "customer cancelled before capture")
    assert (await order.handle.result()).status == "CANCELLED"
    await save(orders.client, "manual-capture-released", order.handle.id)


@pytest.mark.parametrize(
    ("path", "schedule_id"),
    [
        ("daily-report", DAILY_REPORT_SCHEDULE_ID),
        ("stock-sync", STOCK_SYNC_SCHEDULE_ID),
        ("queue-cleanup", QUEUE_CLEANUP_SCHEDULE_ID),
        ("payment-reconciliation", PAYMENT_RECONCILIATION_SCHEDULE_ID),
    ],
)
async def test_scheduled(
    settings: Settings,
    orders: OrderClient,
    path: str,
    schedule_id: str,
) -> None:
    """A scheduled workflow run once, with the workflow, input and task queue its schedule
    (app/schedules.py) starts it with, on an id of its own."""
    action = (schedules(settings) | maintenance_schedules(settings))[schedule_id].action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.task_queue is not None, f"schedule {schedule_id} names no task queue"
    handle = await orders.client.start_workflow(
        action.workflow,
        args=action.args,
        id=f"{action.id}-golden-{uuid.uuid4().hex[:6]}",
        task_queue=action.task_queue,
    )
    await handle.result()
    await save(orders.client, path, handle.id)
