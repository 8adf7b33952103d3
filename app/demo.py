"""`orderflow demo`: four orders against the running system, each to its final status."""

from __future__ import annotations

import asyncio
import time
import uuid

import typer

from app.client import OrderClient, policy_from_settings
from app.temporal import connect
from orderflow.contracts.order import OrderState, OrderStatus, PaymentFailed, PaymentReceived
from orderflow.contracts.review import ReviewDecision
from orderflow.db import make_engine
from orderflow.errors import OrderflowError
from orderflow.money import format_money
from orderflow.settings import Settings
from payments.gateway import SimulatedGateway

EXPIRY_SECONDS = 5.0  # the expired order's own payment timeout, so the demo ends quickly
RETRY_INTERVAL_SECONDS = 3.0  # the retried order's own capture interval, instead of an hour


async def _until(
    orders: OrderClient, order_id: str, statuses: set[OrderStatus], timeout: float = 60.0
) -> OrderState:
    deadline = time.monotonic() + timeout
    while True:
        state = await orders.status(order_id)
        if state.status in statuses:
            return state
        if time.monotonic() > deadline:
            raise OrderflowError(
                f"order {order_id} stayed {state.status}; wanted {sorted(statuses)}"
            )
        await asyncio.sleep(0.2)


async def run_demo() -> None:
    """Run the four scenarios at once and print each final status."""
    settings = Settings.from_env()
    engine = make_engine(settings.db_url)
    orders = OrderClient(await connect(settings), settings, engine)
    tag = uuid.uuid4().hex[:6]

    async def paid() -> OrderState:
        oid = f"demo-paid-{tag}"
        await orders.start_order(oid, "demo", "demo@example.com", [("TSHIRT-M", 2), ("MUG-01", 1)])
        state = await _until(orders, oid, {OrderStatus.PENDING_PAYMENT})
        await orders.payment_received(
            oid,
            PaymentReceived(payment_id=f"pay-{oid}", amount=state.total, currency=state.currency),
        )
        return await _until(orders, oid, {OrderStatus.CONFIRMED})

    async def expired() -> OrderState:
        oid = f"demo-expired-{tag}"
        await orders.start_order(
            oid, "demo", "demo@example.com", [("MUG-01", 1)], payment_timeout_seconds=EXPIRY_SECONDS
        )
        return await _until(orders, oid, {OrderStatus.CANCELLED}, timeout=EXPIRY_SECONDS + 30)

    async def high_value() -> OrderState:
        oid = f"demo-review-{tag}"
        await orders.start_order(oid, "demo", "demo@example.com", [("LAPTOP-PRO", 1)])
        state = await _until(orders, oid, {OrderStatus.PENDING_PAYMENT})
        await orders.payment_received(
            oid,
            PaymentReceived(payment_id=f"pay-{oid}", amount=state.total, currency=state.currency),
        )
        state = await _until(orders, oid, {OrderStatus.IN_REVIEW})
        await orders.decide_review(
            state.review_id, ReviewDecision(approve=True, reviewer="demo-admin", note="looks fine")
        )
        return await _until(orders, oid, {OrderStatus.CONFIRMED})

    async def retried() -> OrderState:
        oid = f"demo-retry-{tag}"
        SimulatedGateway(engine).set_rule(oid, fail_captures=1)
        policy = policy_from_settings(settings)
        policy.payment_retry_interval_seconds = RETRY_INTERVAL_SECONDS
        await orders.start_order(
            oid, "demo", "demo@example.com", [("HEADPHONES", 1)], policy=policy
        )
        await _until(orders, oid, {OrderStatus.PENDING_PAYMENT})
        await orders.payment_failed(
            oid, PaymentFailed(payment_id=f"fail-{oid}", reason="card declined")
        )
        return await _until(orders, oid, {OrderStatus.CONFIRMED})

    scenarios = {
        "paid": paid,
        "expired": expired,
        "high-value approved": high_value,
        "capture retried": retried,
    }
    results = await asyncio.gather(*(fn() for fn in scenarios.values()), return_exceptions=True)
    failed = False
    for name, result in zip(scenarios, results, strict=True):
        if isinstance(result, BaseException):
            failed = True
            typer.echo(f"{name:<20} FAILED: {result}")
        else:
            typer.echo(
                f"{name:<20} {result.order_id:<24} {result.status:<10} {format_money(result.total, result.currency):>14}"
            )
            typer.echo(f"{'':<20} history: " + " → ".join(h.status for h in result.history))
    if failed:
        raise typer.Exit(1)
