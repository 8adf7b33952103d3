"""Durability: a worker restart mid-order and the inventory invariant (replay: test_replay.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from orderflow.contracts.order import (
    ORDERS_TASK_QUEUE,
    OrderState,
    PaymentFailed,
    PaymentReceived,
)
from orderflow.db import Product, Reservation
from orderflow.settings import Settings
from tests.helpers import (
    eventually,
    new_order_id,
    pending_order,
    started_workflow,
    stock,
    wait_status,
)
from workers.temporal import Dependencies, build_workers


async def test_order_survives_a_worker_restart(
    env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    deps: Dependencies,
    catalogue: Callable[..., dict[str, str]],
    workers: object,
) -> None:
    suffix = f"-restart-{uuid.uuid4().hex[:6]}"
    orders = OrderClient(env.client, settings, engine, task_queue=f"orders{suffix}")
    skus = catalogue(vase=(70_000, 3))
    order_id = new_order_id()

    first = build_workers(
        env.client, settings, deps, task_queue_suffix=suffix, queues=[ORDERS_TASK_QUEUE]
    )[0]
    running = asyncio.create_task(first.run())
    handle = (await pending_order(orders, [(skus["vase"], 1)], order_id=order_id)).handle
    await first.shutdown()
    await running

    second = build_workers(
        env.client, settings, deps, task_queue_suffix=suffix, queues=[ORDERS_TASK_QUEUE]
    )[0]
    running = asyncio.create_task(second.run())
    try:
        ack = await orders.payment_received(
            order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=70_000, currency="INR")
        )
        assert ack.accepted, ack.reason
        await wait_status(orders, order_id, "CONFIRMED")
        assert stock(engine, skus["vase"]) == (2, 1)
        assert (
            await handle.describe()
        ).run_id == handle.first_execution_run_id  # one run, finished by the new worker
    finally:
        await second.shutdown()
        await running


async def test_inventory_invariant_after_a_mixed_batch(
    env: WorkflowEnvironment,
    orders: OrderClient,
    engine: Engine,
    deps: Dependencies,
    catalogue: Callable[..., dict[str, str]],
) -> None:
    start = {"a": 12, "b": 7, "c": 4}
    skus = catalogue(a=(10_000, start["a"]), b=(25_000, start["b"]), c=(90_000, start["c"]))
    plan = [
        "pay",
        "cancel",
        "expire",
        "pay",
        "pay-cancel",
        "fail",
        "pay",
        "cancel",
        "expire",
        "pay",
    ] * 2
    ids: list[tuple[str, str]] = []
    for i, action in enumerate(plan):
        order_id = new_order_id()
        if action == "fail":
            deps.gateway.set_rule(order_id, decline_all=True)  # type: ignore[attr-defined]
        lines = (
            [(skus["a"], 1 + i % 2), (skus["b"], 1)] if i % 3 else [(skus["c"], 1), (skus["a"], 1)]
        )
        timeout = 1.0 if action == "expire" else None
        await orders.start_order(
            order_id, "c-batch", "batch@example.com", lines, payment_timeout_seconds=timeout
        )
        ids.append((order_id, action))

    async def drive(order_id: str, action: str) -> str:
        async def placed() -> OrderState | None:
            state = await orders.status(order_id)
            return state if state.status != "NEW" else None

        state = await eventually(placed, 10, f"order {order_id} past its stock check")
        if state.status != "PENDING_PAYMENT":
            return state.status  # REJECTED for lack of stock, or already expired
        if action in ("pay", "pay-cancel"):
            await orders.payment_received(
                order_id,
                PaymentReceived(payment_id=f"pay-{order_id}", amount=state.total, currency="INR"),
            )
            if action == "pay-cancel":
                await wait_status(orders, order_id, "CONFIRMED")
                await orders.cancel(order_id, "batch")
        elif action == "cancel":
            await orders.cancel(order_id, "batch")
        elif action == "fail":
            await orders.payment_failed(
                order_id, PaymentFailed(payment_id=f"pf-{order_id}", reason="declined")
            )
            retry = await started_workflow(env.client, f"payment-capture-{order_id}")
            await env.fast_forward(retry)
        return "driven"

    await asyncio.gather(*(drive(o, a) for o, a in ids))
    finals = {}
    for order_id, action in ids:
        state = await orders.status(order_id)
        if action in ("pay",) and state.status != "REJECTED":
            state = await wait_status(orders, order_id, "CONFIRMED")
        elif state.status != "REJECTED":
            state = await wait_status(orders, order_id, "CANCELLED")
        finals[order_id] = state.status
    assert {"CONFIRMED", "CANCELLED"} <= set(finals.values())

    with Session(engine) as session:
        for name, sku in skus.items():
            product = session.get(Product, sku)
            assert product is not None
            held = session.exec(
                select(func.coalesce(func.sum(Reservation.quantity), 0)).where(
                    col(Reservation.sku) == sku, col(Reservation.status) == "RESERVED"
                )
            ).one()
            assert product.on_hand >= 0 and product.reserved >= 0
            assert product.on_hand + product.reserved == start[name], (name, product)
            assert product.reserved == held
