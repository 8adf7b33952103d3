"""PaymentRetryWorkflow through the order: captures an hour apart, exhaustion cancels."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from orderflow.contracts.order import PaymentFailed, PaymentReceived
from orderflow.contracts.payment import PaymentKind, payment_retry_workflow_id
from tests.helpers import (
    eventually,
    new_order_id,
    payments,
    pending_order,
    stock,
    wait_review,
    wait_status,
)
from workers.temporal import Dependencies
from workflows.payment import PaymentRetryWorkflow


async def test_capture_fails_twice_then_succeeds_an_hour_later(
    env: WorkflowEnvironment,
    orders: OrderClient,
    deps: Dependencies,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
) -> None:
    skus = catalogue(bag=(200_000, 5))
    order_id = new_order_id()
    deps.gateway.set_rule(order_id, fail_captures=2)  # type: ignore[attr-defined]
    handle = (await pending_order(orders, [(skus["bag"], 1)], order_id=order_id)).handle
    await orders.payment_failed(
        order_id, PaymentFailed(payment_id="pf-1", reason="insufficient funds")
    )
    await wait_status(orders, order_id, "PAYMENT_RETRYING")
    retry = env.client.get_workflow_handle_for(
        PaymentRetryWorkflow.run, payment_retry_workflow_id(order_id, PaymentKind.CAPTURE)
    )
    await _wait_attempts(retry, 1)
    started = await env.get_current_time(retry)
    for attempt in (2, 3):
        await _wait_attempts(retry, attempt - 1)
        assert (await orders.status(order_id)).status == "PAYMENT_RETRYING"
        await env.fast_forward(retry, timedelta(minutes=61))
    result = await retry.result()
    assert result.succeeded and [a.succeeded for a in result.attempts] == [False, False, True]
    assert (await env.get_current_time(retry)) - started >= timedelta(hours=2)
    await wait_status(orders, order_id, "CONFIRMED")
    assert payments(engine, order_id) == [
        ("capture", "failed", 200_000),
        ("capture", "failed", 200_000),
        ("capture", "succeeded", 200_000),
    ]
    assert (await orders.status(order_id)).payment_id == result.payment_id
    assert stock(engine, skus["bag"]) == (4, 1)
    # confirmed, the order waits for its shipment: still running, nothing else pending
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING


async def test_all_three_captures_fail_cancels_and_releases(
    env: WorkflowEnvironment,
    orders: OrderClient,
    deps: Dependencies,
    engine: Engine,
    catalogue: Callable[..., dict[str, str]],
) -> None:
    skus = catalogue(kettle=(150_000, 4))
    order_id = new_order_id()
    deps.gateway.set_rule(order_id, decline_all=True)  # type: ignore[attr-defined]
    handle = (await pending_order(orders, [(skus["kettle"], 2)], order_id=order_id)).handle
    assert stock(engine, skus["kettle"]) == (2, 2)
    await orders.payment_failed(order_id, PaymentFailed(payment_id="pf-2", reason="card expired"))
    retry = env.client.get_workflow_handle_for(
        PaymentRetryWorkflow.run, payment_retry_workflow_id(order_id, PaymentKind.CAPTURE)
    )
    await _wait_attempts(retry, 1)
    await env.fast_forward(retry)  # to completion: two more hours of retries
    assert not (await retry.result()).succeeded
    result = await handle.result()
    assert result.status == "CANCELLED"
    assert "3 capture attempts declined" in (await orders.status(order_id)).history[-1].note
    assert [p[:2] for p in payments(engine, order_id)] == [("capture", "failed")] * 3
    assert stock(engine, skus["kettle"]) == (4, 0)


async def test_failed_payments_then_success_go_to_suspicious_review(
    orders: OrderClient, deps: Dependencies, catalogue: Callable[..., dict[str, str]]
) -> None:
    skus = catalogue(watch=(300_000, 3))
    order_id = new_order_id()
    deps.gateway.set_rule(order_id, decline_all=True)  # type: ignore[attr-defined]
    await pending_order(orders, [(skus["watch"], 1)], order_id=order_id)
    await orders.payment_failed(order_id, PaymentFailed(payment_id="pf-3a", reason="declined"))
    await orders.payment_failed(order_id, PaymentFailed(payment_id="pf-3b", reason="declined"))
    await orders.payment_failed(
        order_id, PaymentFailed(payment_id="pf-3b", reason="declined")
    )  # redelivery
    ack = await orders.payment_received(
        order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=300_000, currency="INR")
    )
    assert ack.accepted, ack.reason
    state = await wait_status(orders, order_id, "IN_REVIEW")
    assert state.failed_payments == 2
    review = await wait_review(orders, order_id)
    assert review.kind == "SUSPICIOUS_PAYMENT" and "2 failed payments" in review.reason


async def _wait_attempts(retry: WorkflowHandle[PaymentRetryWorkflow, Any], count: int) -> None:
    async def made() -> bool:
        try:
            return len(await retry.query(PaymentRetryWorkflow.attempts)) >= count
        except RPCError:  # the child is not started yet
            return False

    await eventually(made, 10, f"{retry.id} making {count} attempts")
