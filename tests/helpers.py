"""Small waits and reads shared by the workflow tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from app.client import OrderClient
from orderflow.contracts.order import OrderState
from orderflow.contracts.review import PendingReview
from orderflow.db import Payment, Product

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], within: float = 10.0, what: str = "condition"
) -> T:
    """Poll `check` until it returns a truthy value and return that value; fail after `within` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {within}s")
        await asyncio.sleep(0.05)


async def started_workflow(
    client: Client, workflow_id: str, within: float = 20.0
) -> WorkflowHandle:
    """The handle of a workflow another one starts (a child), once the server knows it."""
    handle = client.get_workflow_handle(workflow_id)

    async def exists() -> bool:
        try:
            await handle.describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    await eventually(exists, within, f"workflow {workflow_id} started")
    return handle


async def wait_status(
    orders: OrderClient, order_id: str, status: str, timeout: float = 20.0
) -> OrderState:
    """Poll the status query until the order reaches `status`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state = await orders.status(order_id)
        if state.status == status:
            return state
        if loop.time() > deadline:
            raise AssertionError(
                f"order {order_id} is {state.status}, not {status}: {state.history}"
            )
        await asyncio.sleep(0.1)


async def wait_review(orders: OrderClient, order_id: str, timeout: float = 20.0) -> PendingReview:
    """Wait until the order's review is listed as pending."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for review in await orders.pending_reviews():
            if review.order_id == order_id:
                return review
        await asyncio.sleep(0.1)
    raise AssertionError(f"no pending review for order {order_id}")


def stock(engine: Engine, sku: str) -> tuple[int, int]:
    """(on_hand, reserved) of a SKU."""
    with Session(engine) as session:
        product = session.get(Product, sku)
        assert product is not None
        return product.on_hand, product.reserved


def payments(engine: Engine, order_id: str) -> list[tuple[str, str, float]]:
    """(kind, status, amount) of every payment row of an order, in order."""
    with Session(engine) as session:
        rows = session.exec(
            select(Payment).where(Payment.order_id == order_id).order_by(Payment.id)
        ).all()
    return [(p.kind, p.status, p.amount) for p in rows]


async def wait_job(queue: Any, job_id: str, timeout: float = 10.0) -> Any:
    """Wait until a BullMQ job with this id exists and return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        job = await queue.getJob(job_id)
        if job is not None:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"no job {job_id!r} on queue {queue.name}")
