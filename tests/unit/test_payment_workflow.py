"""PaymentRetryWorkflow with the gateway stubbed: attempts an hour apart, then give up."""

from __future__ import annotations

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from orderflow.contracts.payment import PaymentKind, PaymentRetryInput, gateway_idempotency_key
from tests.helpers import new_order_id
from tests.unit.conftest import Stubs
from workflows.payment import PaymentRetryWorkflow


async def test_three_declines_end_unsucceeded_two_hours_later(
    env: WorkflowEnvironment, unit_orders: OrderClient, stubs: Stubs
) -> None:
    stubs.declines = 3
    order_id = new_order_id()
    handle = await env.client.start_workflow(
        PaymentRetryWorkflow.run,
        PaymentRetryInput(order_id=order_id, kind=PaymentKind.CAPTURE, amount=25_000),
        id=f"unit-retry-{order_id}",
        task_queue=unit_orders.task_queue,
    )
    started = await env.get_current_time(handle)
    await env.fast_forward(handle)
    result = await handle.result()
    assert not result.succeeded and [a.succeeded for a in result.attempts] == [False] * 3
    assert (await env.get_current_time(handle)) - started >= timedelta(hours=2)
    keys = [r.idempotency_key for r in stubs.called("call_gateway")]
    assert len(set(keys)) == 3  # one key per attempt: a repeated call is not a second charge


async def test_a_refund_succeeds_at_the_first_attempt(
    env: WorkflowEnvironment, unit_orders: OrderClient, stubs: Stubs
) -> None:
    order_id = new_order_id()
    result = await env.client.execute_workflow(
        PaymentRetryWorkflow.run,
        PaymentRetryInput(order_id=order_id, kind=PaymentKind.REFUND, amount=9900),
        id=f"unit-refund-{order_id}",
        task_queue=unit_orders.task_queue,
    )
    assert result.succeeded and result.payment_id == f"refund-{order_id}-1"
    assert [(r.kind, r.amount) for r in stubs.called("call_gateway")] == [
        (PaymentKind.REFUND, 9900)
    ]


async def test_a_new_run_of_the_same_retry_sends_the_same_keys_as_the_first(
    env: WorkflowEnvironment, unit_orders: OrderClient, stubs: Stubs
) -> None:
    """A reset (or any new run of the workflow) must not charge again: keys carry no run id."""
    order_id = new_order_id()
    data = PaymentRetryInput(
        order_id=order_id,
        kind=PaymentKind.REFUND,
        amount=9900,
        payment_id="pi_paid",
        currency="INR",
    )
    runs = []
    for _ in range(2):
        handle = await env.client.start_workflow(
            PaymentRetryWorkflow.run,
            data,
            id=f"unit-rerun-{order_id}",
            task_queue=unit_orders.task_queue,
        )
        await handle.result()
        runs.append(handle.result_run_id)
    assert runs[0] != runs[1]
    keys = [r.idempotency_key for r in stubs.called("call_gateway")]
    assert keys == [gateway_idempotency_key(order_id, PaymentKind.REFUND, 1, "pi_paid")] * 2
    assert all(run[:8] not in keys[0] for run in runs)
    assert [r.payment_id for r in stubs.called("call_gateway")] == ["pi_paid", "pi_paid"]
