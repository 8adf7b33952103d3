"""OrderWorkflow end to end on the real dev server, database and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from bullmq import Queue as BullQueue
from sqlalchemy import text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.erp import LocalErp
from activities.order import OrderActivities
from app.client import OrderClient
from orderflow.contracts.order import (
    ORDERS_TASK_QUEUE,
    OrderInput,
    OrderLine,
    OrderPolicy,
    OrderState,
    PaymentReceived,
    PlaceOrderResult,
    order_workflow_id,
)
from orderflow.contracts.review import ReviewDecision
from orderflow.db import Invoice, Order, OrderItem, Payment, Product, Reservation, WebhookEvent
from orderflow.errors import InvalidOrderError
from payments.events import EventKind, GatewayEvent
from payments.processor import WebhookProcessor
from tests.fake_erp import FakeErp
from tests.helpers import (
    erp_received,
    eventually,
    lock_waiters,
    new_order_id,
    payments,
    pending_order,
    start_with_payment,
    stock,
    wait_job,
    wait_review,
    wait_status,
)
from workflows.order import DB_TIMEOUT, OrderWorkflow


async def test_paid_in_time_is_confirmed_with_invoice_erp_and_mail(
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
    email_queue: BullQueue,
    erp: FakeErp,
) -> None:
    skus = catalogue(shirt=(79_900, 10))
    placed = await pending_order(orders, [(skus["shirt"], 2)], email="a@example.com")
    order_id, handle = placed.id, placed.handle
    assert stock(engine, skus["shirt"]) == (8, 2)

    ack = await orders.payment_received(
        order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=159_800, currency="INR")
    )
    assert ack.accepted, ack.reason

    state = await wait_status(orders, order_id, "CONFIRMED")
    assert [h.status for h in state.history] == ["PENDING_PAYMENT", "PENDING_PAYMENT", "CONFIRMED"]
    with Session(engine) as session:
        order = session.get(Order, order_id)
        invoice = session.get(Invoice, order_id)
        payments = session.exec(select(Payment).where(Payment.order_id == order_id)).all()
    assert order is not None and order.status == "CONFIRMED" and order.total == 159_800
    assert invoice is not None and "₹1,598.00" in invoice.html and skus["shirt"] in invoice.html
    job = await wait_job(email_queue, f"order-confirmation-{order_id}")  # sent beside the ERP sync
    pushed = await erp_received(erp, order_id)
    assert pushed["total"] == 159_800 and pushed["invoice"] == f"INV-{order_id}"
    assert pushed["items"] == [{"sku": skus["shirt"], "quantity": 2, "unit_price": 79_900}]
    assert [(p.payment_id, p.amount) for p in payments] == [(f"pay-{order_id}", 159_800)]
    assert job.name == "send-order-confirmation"
    assert job.data["to"] == "a@example.com" and job.data["data"]["total"] == "1598.00"
    assert handle.id == f"order-{order_id}"


async def test_unpaid_order_is_cancelled_after_one_hour_and_stock_restored(
    env: WorkflowEnvironment,
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
) -> None:
    skus = catalogue(mug=(25_000, 5))
    placed = await pending_order(orders, [(skus["mug"], 3)])
    order_id, handle = placed.id, placed.handle
    assert stock(engine, skus["mug"]) == (2, 3)
    await env.fast_forward(handle, timedelta(minutes=59))
    assert (await orders.status(order_id)).status == "PENDING_PAYMENT"
    await env.fast_forward(handle, timedelta(minutes=2))
    result = await handle.result()
    assert result.status == "CANCELLED"
    assert stock(engine, skus["mug"]) == (5, 0)


async def test_paid_at_59_minutes_is_paid(
    env: WorkflowEnvironment,
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
) -> None:
    skus = catalogue(lamp=(120_000, 4))
    placed = await pending_order(orders, [(skus["lamp"], 1)])
    order_id, handle = placed.id, placed.handle
    assert await env.fast_forward(handle, timedelta(minutes=59))
    ack = await orders.payment_received(
        order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=120_000, currency="INR")
    )
    assert ack.accepted, ack.reason
    await wait_status(orders, order_id, "CONFIRMED")
    await env.fast_forward(handle, timedelta(hours=2))  # the cancelled timer must not fire later
    assert (await orders.status(order_id)).status == "CONFIRMED"
    assert stock(engine, skus["lamp"]) == (3, 1)


async def test_not_enough_stock_is_rejected_and_nothing_reserved(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    skus = catalogue(pen=(2000, 10), ink=(5000, 1))
    order_id = new_order_id()
    handle = await orders.start_order(
        order_id, "cust-4", "d@example.com", [(skus["pen"], 3), (skus["ink"], 2)]
    )
    result = await handle.result()
    assert result.status == "REJECTED"
    state = await orders.status(order_id)
    assert "not enough stock" in state.history[-1].note and skus["ink"] in state.history[-1].note
    assert stock(engine, skus["pen"]) == (10, 0) and stock(engine, skus["ink"]) == (1, 0)


async def test_duplicate_payment_signals_have_one_effect(
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
    email_queue: BullQueue,
) -> None:
    skus = catalogue(book=(30_000, 5))
    order_id = (await pending_order(orders, [(skus["book"], 1)])).id
    payment = PaymentReceived(payment_id=f"pay-{order_id}", amount=30_000, currency="INR")
    for _ in range(3):
        await orders.signal_payment_received(order_id, payment)
    again = await orders.payment_received(order_id, payment)
    assert again.accepted and "duplicate" in again.reason
    other = await orders.payment_received(
        order_id, PaymentReceived(payment_id="someone-else", amount=30_000, currency="INR")
    )
    assert not other.accepted and f"already paid by pay-{order_id}" in other.reason
    await wait_status(orders, order_id, "CONFIRMED")
    assert payments(engine, order_id) == [("capture", "succeeded", 30_000)]
    job = await wait_job(email_queue, f"order-confirmation-{order_id}")
    assert job.data["data"]["orderNumber"] == order_id


async def test_start_twice_is_one_order(
    orders: OrderClient, catalogue: Callable[..., dict[str, str]]
) -> None:
    skus = catalogue(cap=(15_000, 5))
    order_id = new_order_id()
    first = await orders.start_order(order_id, "cust-6", "f@example.com", [(skus["cap"], 1)])
    second = await orders.start_order(order_id, "cust-6", "f@example.com", [(skus["cap"], 1)])
    assert first.id == second.id
    assert (await first.describe()).run_id == (await second.describe()).run_id


async def test_payment_for_cancelled_order_is_refused(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    skus = catalogue(sock=(9900, 6))
    placed = await pending_order(orders, [(skus["sock"], 2)])
    order_id, handle = placed.id, placed.handle
    await orders.cancel(order_id, "changed my mind")
    assert (await handle.result()).status == "CANCELLED"
    ack = await orders.payment_received(
        order_id, PaymentReceived(payment_id="late", amount=19_800, currency="INR")
    )
    assert not ack.accepted and order_id in ack.reason
    assert stock(engine, skus["sock"]) == (6, 0)


async def test_cancel_after_payment_refunds_and_releases(
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
    email_queue: BullQueue,
) -> None:
    skus = catalogue(chair=(450_000, 3))
    placed = await pending_order(orders, [(skus["chair"], 1)])
    order_id, handle = placed.id, placed.handle
    await orders.payment_received(
        order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=450_000, currency="INR")
    )
    await wait_status(orders, order_id, "CONFIRMED")
    await orders.cancel(order_id, "customer cancelled before shipping")
    result = await handle.result()
    assert result.status == "CANCELLED"
    assert payments(engine, order_id) == [
        ("capture", "succeeded", 450_000),
        ("refund", "succeeded", 450_000),
    ]
    assert stock(engine, skus["chair"]) == (3, 0)
    assert "refunded" in (await orders.status(order_id)).history[-1].note
    assert (
        await wait_job(email_queue, f"order-cancelled-{order_id}")
    ).name == "send-order-cancelled"


async def test_shipped_order_releases_reserved_stock_and_mails(
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
    email_queue: BullQueue,
) -> None:
    from orderflow.contracts.order import Shipment

    skus = catalogue(desk=(900_000, 2))
    placed = await pending_order(orders, [(skus["desk"], 1)])
    order_id, handle = placed.id, placed.handle
    await orders.payment_received(
        order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=900_000, currency="INR")
    )
    await wait_status(orders, order_id, "CONFIRMED")
    await orders.shipped(order_id, Shipment(carrier="BlueDart", tracking_number="BD123"))
    assert (await handle.result()).status == "SHIPPED"
    assert stock(engine, skus["desk"]) == (1, 0)
    with Session(engine) as session:
        order = session.get(Order, order_id)
        assert order is not None and order.status == "SHIPPED"
    job = await wait_job(email_queue, f"shipping-notification-{order_id}")
    assert (job.data["data"]["carrier"], job.data["data"]["trackingNumber"]) == (
        "BlueDart",
        "BD123",
    )


async def test_payment_that_does_not_match_the_total_is_refused(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    skus = catalogue(hat=(35_000, 4))
    order_id = (await pending_order(orders, [(skus["hat"], 2)])).id
    short = await orders.payment_received(
        order_id, PaymentReceived(payment_id="short", amount=35_000, currency="INR")
    )
    assert not short.accepted
    assert order_id in short.reason and "₹350.00" in short.reason and "₹700.00" in short.reason
    assert (await orders.status(order_id)).status == "PENDING_PAYMENT"
    ack = await orders.payment_received(
        order_id, PaymentReceived(payment_id="full", amount=70_000, currency="INR")
    )
    assert ack.accepted, ack.reason
    await wait_status(orders, order_id, "CONFIRMED")
    assert payments(engine, order_id) == [("capture", "succeeded", 70_000)]


async def test_payment_arriving_with_the_start_of_a_rejected_order_is_refunded(
    env: WorkflowEnvironment,
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
) -> None:
    skus = catalogue(clock=(99_900, 1))
    order_id = new_order_id()
    handle = await start_with_payment(  # the payment is in the first workflow task
        orders,
        order_id,
        [(skus["clock"], 2)],
        PaymentReceived(f"pay-{order_id}", 199_800, currency="INR"),
    )
    assert (await handle.result()).status == "REJECTED"
    assert payments(engine, order_id) == [  # the payment has its row, then its refund
        ("capture", "succeeded", 199_800),
        ("refund", "succeeded", 199_800),
    ]
    assert "refunded" in (await orders.status(order_id)).history[-1].note
    assert stock(engine, skus["clock"]) == (1, 0)


async def test_a_short_payment_sent_with_the_start_is_refunded_and_a_full_one_confirms(
    env: WorkflowEnvironment,
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
) -> None:
    skus = catalogue(radio=(199_800, 2))
    order_id = new_order_id()
    await start_with_payment(  # paid before the total is known
        orders,
        order_id,
        [(skus["radio"], 1)],
        PaymentReceived(f"early-{order_id}", 100, currency="INR"),
    )

    async def refunded() -> OrderState | None:
        state = await orders.status(order_id)
        return state if state.history[-1].note.startswith("refunded") else None

    state = await eventually(refunded, 20, f"the early ₹1.00 of order {order_id} refunded")
    assert state.status == "PENDING_PAYMENT" and state.payment_id == ""
    assert "₹1.00 is not the total ₹1,998.00" in state.history[-2].note
    assert payments(engine, order_id) == [
        ("capture", "succeeded", 100),
        ("refund", "succeeded", 100),
    ]
    ack = await orders.payment_received(
        order_id, PaymentReceived(f"pay-{order_id}", 199_800, currency="INR")
    )
    assert ack.accepted, ack.reason
    await wait_status(orders, order_id, "CONFIRMED")
    assert payments(engine, order_id) == [
        ("capture", "succeeded", 100),
        ("refund", "succeeded", 100),
        ("capture", "succeeded", 199_800),
    ]
    assert stock(engine, skus["radio"]) == (1, 1)


async def test_duplicate_sku_lines_are_merged_into_one_reservation(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    """`--item A:1 --item A:2` used to break the reservation's unique key and stick at NEW."""
    skus = catalogue(cup=(15_000, 10))
    order = await pending_order(orders, [(skus["cup"], 1), (skus["cup"], 2)])
    assert order.state.total == 45_000
    assert stock(engine, skus["cup"]) == (7, 3)


async def test_an_order_with_a_bad_quantity_is_rejected_with_the_reason(
    env: WorkflowEnvironment,
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
) -> None:
    skus = catalogue(fork=(5_000, 10))
    order_id = new_order_id()
    with pytest.raises(InvalidOrderError, match=order_id):  # the client refuses it up front
        await orders.start_order(order_id, "c", "c@example.com", [(skus["fork"], 0)])
    handle = await env.client.start_workflow(  # a starter that skips the client's check
        OrderWorkflow.run,
        OrderInput(order_id, "c", "c@example.com", [OrderLine(skus["fork"], 0)], OrderPolicy()),
        id=order_workflow_id(order_id),
        task_queue=ORDERS_TASK_QUEUE,
    )
    assert (await handle.result()).status == "REJECTED"
    state = await orders.status(order_id)
    assert f"quantity 0 of {skus['fork']} is not a positive number" in state.history[-1].note
    assert stock(engine, skus["fork"]) == (10, 0)


@contextmanager
def product_row_held(engine: Engine, sku: str) -> Iterator[None]:
    """Another transaction holds the product's row (SQLite: the write lock) until the block ends."""
    with engine.connect() as holder:
        if engine.dialect.name == "postgresql":
            holder.execute(select(Product).where(col(Product.sku) == sku).with_for_update()).all()
        else:  # BEGIN IMMEDIATE: every other writer waits at its BEGIN
            holder.execute(update(Product).where(col(Product.sku) == sku).values(name="held"))
        yield
        holder.rollback()


def _placed_rows(engine: Engine, order_id: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(sku, quantity) of the order's lines, and its reservations' statuses."""
    with Session(engine) as session:
        lines = session.exec(select(OrderItem).where(OrderItem.order_id == order_id)).all()
        held = session.exec(select(Reservation).where(Reservation.order_id == order_id)).all()
    return [(i.sku, i.quantity) for i in lines], [r.status for r in held]


@pytest.mark.parametrize("units", [1, 5], ids=["the-last-unit", "plenty"])
async def test_a_place_order_retried_while_its_overrun_first_attempt_commits_returns_its_result(
    engine: Engine, catalogue: Callable[..., dict[str, str]], units: int
) -> None:
    """The first attempt outlived its local-activity timeout and commits while the retry runs.

    On PostgreSQL the retry's look for the order misses the row the first attempt has not
    committed yet; then its insert hits the order's primary key. With the last unit the retry
    finds no stock and tries to insert a REJECTED row; with plenty it has reserved again.
    Either way the order is already placed: the retry must answer as the first attempt did.
    SQLite's write lock (BEGIN IMMEDIATE) serializes the two, so there the retry finds it.
    """
    sku = catalogue(lamp=(129_900, units))["lamp"]
    order = OrderInput(new_order_id(), "c-7", "c7@example.com", [OrderLine(sku, 1)])
    acts = OrderActivities(engine, LocalErp(engine))
    postgres = engine.dialect.name == "postgresql"
    with product_row_held(engine, sku):
        first = asyncio.create_task(asyncio.to_thread(acts.place_order, order))
        if postgres:
            await eventually(lambda: _waiting(engine, 1), what="the first attempt waits")
        retry = asyncio.create_task(asyncio.to_thread(acts.place_order, order))
        if postgres:  # the retry has looked for the order and found nothing yet
            await eventually(lambda: _waiting(engine, 2), what="the retry waits behind it")
    placed = await asyncio.wait_for(first, 30)
    assert placed == PlaceOrderResult(reserved=True, total=129_900, currency="INR")
    assert await asyncio.wait_for(retry, 30) == placed
    assert stock(engine, sku) == (units - 1, 1)
    assert _placed_rows(engine, order.order_id) == ([(sku, 1)], ["RESERVED"])


async def _waiting(engine: Engine, sessions: int) -> bool:
    return await asyncio.to_thread(lock_waiters, engine) >= sessions


def test_an_order_id_placed_again_with_other_items_is_refused_naming_the_order(
    engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    """A second place_order with the same id and other items is not "already placed"."""
    skus = catalogue(jug=(40_000, 5), bowl=(20_000, 5))
    order_id = new_order_id()
    acts = OrderActivities(engine, LocalErp(engine))
    acts.place_order(OrderInput(order_id, "c", "c@example.com", [OrderLine(skus["jug"], 1)]))
    with pytest.raises(ApplicationError, match=f"order '{order_id}' is already placed") as err:
        acts.place_order(OrderInput(order_id, "c", "c@example.com", [OrderLine(skus["bowl"], 2)]))
    assert err.value.non_retryable
    assert stock(engine, skus["jug"]) == (4, 1) and stock(engine, skus["bowl"]) == (5, 0)


@contextmanager
def commit_of_order_held(engine: Engine, order_id: str) -> Iterator[None]:
    """PostgreSQL: a transaction inserting this order waits in its COMMIT until the block ends.

    A deferred constraint trigger takes an advisory lock the test holds. Waiting in COMMIT is
    what lets an attempt outlive its timeout: the SDK's cancel (an exception raised in the
    activity's thread) reaches Python code only after the server has committed.
    """
    name = f"hold_{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().int % 2**62
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        holder.commit()  # the session keeps the lock
        with engine.begin() as ddl:
            ddl.execute(
                text(
                    f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                    f" IF NEW.id = '{order_id}' THEN PERFORM pg_advisory_xact_lock_shared({key});"
                    " END IF; RETURN NULL; END $$"
                )
            )
            ddl.execute(
                text(
                    f'CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON "order"'
                    f" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {name}()"
                )
            )
        try:
            yield
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            holder.commit()
            with engine.begin() as ddl:
                ddl.execute(text(f'DROP TRIGGER {name} ON "order"'))
                ddl.execute(text(f"DROP FUNCTION {name}()"))


async def test_an_order_whose_first_place_order_attempt_overruns_its_timeout_waits_for_payment(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    """The first attempt's COMMIT waits past the local activity's 30 s; the retry starts, misses
    the uncommitted order and waits for the stock row; the first commits, the retry conflicts."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes the attempts at BEGIN IMMEDIATE: no conflict to meet")
    sku = catalogue(kettle=(249_900, 3))["kettle"]
    order_id = new_order_id()
    with commit_of_order_held(engine, order_id):
        await orders.start_order(order_id, "c-7", "c7@example.com", [(sku, 1)])
        await eventually(lambda: _waiting(engine, 1), what="the first attempt waits in COMMIT")
        await eventually(
            lambda: _waiting(engine, 2),
            within=DB_TIMEOUT.total_seconds() + 30,
            what="the second attempt, after the first one's timeout, waiting for the stock row",
        )
    state = await wait_status(orders, order_id, "PENDING_PAYMENT", timeout=30)
    assert state.total == 249_900
    assert stock(engine, sku) == (2, 1)
    assert _placed_rows(engine, order_id) == ([(sku, 1)], ["RESERVED"])


@pytest.mark.parametrize(
    "price", [2_500_000_000, 2**63 - 1], ids=["two-and-a-half-crore", "the-largest-bigint"]
)
async def test_an_order_past_32_bit_paise_is_placed_paid_and_confirmed_to_the_paisa(
    orders: OrderClient,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
    price: int,
) -> None:
    """₹2.5 crore is 2,500,000,000 paise, past a 32-bit INTEGER (2^31 - 1 = 2,147,483,647)."""
    sku = catalogue(yacht=(price, 1))["yacht"]
    order_id = (await pending_order(orders, [(sku, 1)])).id
    event = GatewayEvent(
        provider="stripe",
        event_id=f"evt_{order_id}",
        type="payment_intent.succeeded",
        kind=EventKind.PAYMENT_RECEIVED,
        order_id=order_id,
        payment_id=f"pi_{order_id}",
        amount_minor=price,
        currency="INR",
    )
    applied = await WebhookProcessor(orders, engine).apply(event)
    assert applied["status"] == "applied", applied
    review = await wait_review(orders, order_id)  # far above the high-value threshold
    await orders.decide_review(review.review_id, ReviewDecision(approve=True, reviewer="asha"))
    state = await wait_status(orders, order_id, "CONFIRMED")
    assert (state.total, state.payment_id) == (price, f"pi_{order_id}")
    with Session(engine) as session:
        order = session.get(Order, order_id)
        [line] = session.exec(select(OrderItem).where(OrderItem.order_id == order_id)).all()
        [paid] = session.exec(select(Payment).where(Payment.order_id == order_id)).all()
        invoice = session.get(Invoice, order_id)
        [recorded] = session.exec(
            select(WebhookEvent).where(WebhookEvent.event_id == f"evt_{order_id}")
        ).all()
    assert order is not None and order.total == price and line.unit_price == price
    assert (paid.payment_id, paid.amount) == (f"pi_{order_id}", price)
    assert invoice is not None and invoice.total == price
    assert (recorded.amount, recorded.status) == (price, "APPLIED")


def test_an_order_whose_total_passes_the_money_columns_is_refused_naming_the_order(
    engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    """Two of a 2^62-paise item come to 2^63: one more than a BIGINT (or SQLite's INTEGER) holds."""
    sku = catalogue(moon=(2**62, 5))["moon"]
    order_id = new_order_id()
    acts = OrderActivities(engine, LocalErp(engine))
    with pytest.raises(ApplicationError, match=f"order '{order_id}'.*2\\^63") as err:
        acts.place_order(OrderInput(order_id, "c", "c@example.com", [OrderLine(sku, 2)]))
    assert err.value.non_retryable
    with Session(engine) as session:
        assert session.get(Order, order_id) is None
    assert stock(engine, sku) == (5, 0)
