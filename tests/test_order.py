"""OrderWorkflow end to end on the real dev server, database and Redis."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from bullmq import Queue as BullQueue
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from orderflow.client import OrderClient
from orderflow.contracts.order import PaymentReceived
from orderflow.db import ErpRecord, Invoice, Order, Payment, Product
from tests.conftest import new_order_id


def stock(engine: Engine, sku: str) -> tuple[int, int]:
    """(on_hand, reserved) of a SKU."""
    with Session(engine) as session:
        product = session.get(Product, sku)
        assert product is not None
        return product.on_hand, product.reserved


async def test_paid_in_time_is_confirmed_with_invoice_erp_and_mail(
    orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]], email_queue: BullQueue
) -> None:
    skus = catalogue(shirt=(799.0, 10))
    order_id = new_order_id()
    handle = await orders.start_order(order_id, "cust-1", "a@example.com", [(skus["shirt"], 2)])
    await _wait_status(orders, order_id, "PENDING_PAYMENT")
    assert stock(engine, skus["shirt"]) == (8, 2)

    ack = await orders.payment_received(order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=1598.0))
    assert ack.accepted, ack.reason

    state = await _wait_status(orders, order_id, "CONFIRMED")
    assert [h.status for h in state.history] == ["PENDING_PAYMENT", "PENDING_PAYMENT", "CONFIRMED"]
    with Session(engine) as session:
        order = session.get(Order, order_id)
        invoice = session.get(Invoice, order_id)
        erp = session.get(ErpRecord, order_id)
        payments = session.exec(select(Payment).where(Payment.order_id == order_id)).all()
    assert order is not None and order.status == "CONFIRMED" and order.total == 1598.0
    assert invoice is not None and "1598.00" in invoice.html and skus["shirt"] in invoice.html
    assert erp is not None and f'"order_id": "{order_id}"' in erp.payload
    assert [(p.payment_id, p.amount) for p in payments] == [(f"pay-{order_id}", 1598.0)]
    job = await email_queue.getJob(f"order-confirmation:{order_id}")
    assert job is not None and job.name == "send-order-confirmation"
    assert job.data["to"] == "a@example.com" and job.data["data"]["total"] == 1598.0
    assert handle.id == f"order-{order_id}"


async def _wait_status(orders: OrderClient, order_id: str, status: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await orders.status(order_id)
        if state.status == status:
            return state
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"order {order_id} is {state.status}, not {status}: {state.history}")
        await asyncio.sleep(0.1)


async def test_unpaid_order_is_cancelled_after_one_hour_and_stock_restored(
    env: WorkflowEnvironment, orders: OrderClient, engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    skus = catalogue(mug=(250.0, 5))
    order_id = new_order_id()
    handle = await orders.start_order(order_id, "cust-2", "b@example.com", [(skus["mug"], 3)])
    await _wait_status(orders, order_id, "PENDING_PAYMENT")
    assert stock(engine, skus["mug"]) == (2, 3)
    await env.fast_forward(handle, timedelta(minutes=59))
    assert (await orders.status(order_id)).status == "PENDING_PAYMENT"
    await env.fast_forward(handle, timedelta(minutes=2))
    result = await handle.result()
    assert result.status == "CANCELLED"
    assert stock(engine, skus["mug"]) == (5, 0)
