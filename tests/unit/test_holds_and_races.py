"""The order's holds and same-activation races (issue 18: holes 5, 8 and 11's hold items).

The races need one workflow activation that holds two events. A worker of the SDK's
single-batch mode (every job of an activation applied before the workflow runs: the mode the SDK
plans to make the default) is stopped, both events reach the server while nobody serves the
order, and the next worker gets them in one workflow task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    StartChildWorkflowInput,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)
from temporalio.worker._workflow_instance import _WorkflowLogicFlag

from app.client import OrderClient
from orderflow.contracts.order import OrderStatus, PaymentFailed, PaymentReceived
from orderflow.contracts.payment import PaymentKind, payment_retry_workflow_id
from tests.helpers import eventually, pending_order, started_workflow, wait_status
from tests.unit.conftest import UNIT_WORKFLOWS, Stubs, unit_client


async def _timer_fired(handle: WorkflowHandle[Any, Any]) -> bool:
    async for event in handle.fetch_history_events():
        if event.HasField("timer_fired_event_attributes"):
            return True
    return False


def _calls(stubs: Stubs, kind: PaymentKind) -> list[int]:
    return [r.amount for r in stubs.called("call_gateway") if r.kind is kind]


class _PaymentsApart(Interceptor):
    """Capture and refund retries run on a task queue of their own; the rest on the order's."""

    def __init__(self, payments_queue: str) -> None:
        self.payments_queue = payments_queue

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        payments_queue = self.payments_queue

        class Outbound(WorkflowOutboundInterceptor):
            def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
                input.task_queue = None
                return super().start_activity(input)

            async def start_child_workflow(
                self, input: StartChildWorkflowInput
            ) -> workflow.ChildWorkflowHandle[Any, Any]:
                retry = input.workflow == "PaymentRetryWorkflow"
                input.task_queue = payments_queue if retry else None
                return await super().start_child_workflow(input)

        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

        return Inbound


@asynccontextmanager
async def _single_batch_worker(
    env: WorkflowEnvironment, stubs: Stubs, task_queue: str, payments_queue: str
) -> AsyncIterator[Worker]:
    worker = Worker(
        env.client,
        task_queue=task_queue,
        workflows=UNIT_WORKFLOWS,
        activities=stubs.activities(),
        interceptors=[_PaymentsApart(payments_queue)],
    )
    # the SDK's own tests switch the mode on this way until it is the default
    worker._set_default_workflow_logic_flag(
        _WorkflowLogicFlag.PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH, enabled=True
    )
    async with worker:
        yield worker


async def test_a_payment_that_arrives_with_the_retrys_successful_capture_is_not_kept_twice(
    env: WorkflowEnvironment, stubs: Stubs
) -> None:
    """The capture retry succeeds and a card payment is accepted in the same activation: the
    order keeps one of them and refunds the other (it kept both, and told nobody)."""
    orders = unit_client(env)
    payments_queue = f"{orders.task_queue}-payments"
    stubs.capture_gate = asyncio.Event()
    async with _single_batch_worker(env, stubs, payments_queue, payments_queue):
        async with _single_batch_worker(env, stubs, orders.task_queue, payments_queue):
            order = await pending_order(orders, [("bag", 1)])
            await orders.payment_failed(order.id, PaymentFailed("pf", "declined"))
            await asyncio.wait_for(stubs.capturing.wait(), 20)
        # nobody serves the order now: the payment and the retry's end wait in its history
        await orders.signal_payment_received(
            order.id, PaymentReceived("pay-card", 10_000, currency="INR")
        )
        retry = await started_workflow(
            env.client, payment_retry_workflow_id(order.id, PaymentKind.CAPTURE)
        )
        stubs.capture_gate.set()
        assert (await retry.result())["succeeded"]
        async with _single_batch_worker(env, stubs, orders.task_queue, payments_queue):
            state = await wait_status(orders, order.id, "CONFIRMED")

            async def refunded() -> list[int]:
                return _calls(stubs, PaymentKind.REFUND)

            assert await eventually(refunded, 20, "the duplicate refunded") == [10_000]
    assert state.payment_id == "pay-card"
    assert _calls(stubs, PaymentKind.CAPTURE) == [10_000]
    [refund] = [r for r in stubs.called("call_gateway") if r.kind is PaymentKind.REFUND]
    assert refund.payment_id == f"capture-{order.id}-1"


async def test_a_payment_that_arrives_with_the_auto_cancel_timer_pays_the_order(
    env: WorkflowEnvironment, stubs: Stubs
) -> None:
    """The hour ends and a payment is accepted in the same activation: the order is paid (it
    was cancelled as "not paid within 60 minutes" and the accepted payment refunded)."""
    orders = unit_client(env)
    payments_queue = f"{orders.task_queue}-payments"
    async with _single_batch_worker(env, stubs, payments_queue, payments_queue):
        async with _single_batch_worker(env, stubs, orders.task_queue, payments_queue):
            order = await pending_order(orders, [("mug", 1)])
        # time skips only while no workflow task is pending: the hour first, then the payment
        skip = asyncio.create_task(env.fast_forward(order.handle, timedelta(minutes=61)))
        try:
            await eventually(lambda: _timer_fired(order.handle), 20, "the auto-cancel timer fired")
            await orders.signal_payment_received(
                order.id, PaymentReceived("pay-late", 10_000, currency="INR")
            )
            async with _single_batch_worker(env, stubs, orders.task_queue, payments_queue):
                state = await wait_status(orders, order.id, "CONFIRMED")
        finally:
            skip.cancel()
    assert state.payment_id == "pay-late"
    assert not stubs.called("call_gateway") and not stubs.called("release_reservation")


async def _hold_in_review(
    orders: OrderClient, stubs: Stubs, held: int = 6_600_000
) -> tuple[str, PaymentReceived]:
    """A ₹65,000 order whose hold is accepted and waits for its review; (order id, hold)."""
    stubs.prices["tv"] = 6_500_000
    order = await pending_order(orders, [("tv", 1)])
    hold = PaymentReceived(f"pi_{order.id}", held, currency="INR", authorised_only=True)
    assert (await orders.payment_received(order.id, hold)).accepted
    await wait_status(orders, order.id, "IN_REVIEW")
    return order.id, hold


async def test_a_hold_whose_release_fails_but_that_was_captured_is_refunded(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    """Razorpay auto-capture sends payment.authorized first: the hold is captured by the time
    the cancelled order releases it, and the release call fails."""
    order_id, hold = await _hold_in_review(unit_orders, stubs)
    stubs.captured_holds.add(hold.payment_id)
    stubs.release_fails = True
    await unit_orders.cancel(order_id, "changed my mind")
    assert (await unit_orders.result(order_id)).status == OrderStatus.CANCELLED
    [refund] = [r for r in stubs.called("call_gateway") if r.kind is PaymentKind.REFUND]
    assert (refund.payment_id, refund.amount) == (hold.payment_id, hold.amount)


async def test_a_hold_whose_release_fails_and_whose_state_cannot_be_learnt_ends_refund_failed(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    order_id, hold = await _hold_in_review(unit_orders, stubs)
    stubs.release_fails = stubs.lookup_fails = True
    await unit_orders.cancel(order_id, "changed my mind")
    assert (await unit_orders.result(order_id)).status == OrderStatus.REFUND_FAILED
    note = (await unit_orders.status(order_id)).history[-1].note
    assert f"RELEASE FAILED for {hold.payment_id}" in note and "operator" in note
    assert [s.status for s in stubs.called("set_status")][-1] == OrderStatus.REFUND_FAILED


async def test_a_larger_hold_captured_whole_elsewhere_is_refunded_whole(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    """₹66,000 held for a ₹65,000 order and captured whole by someone else: all of it goes
    back (₹65,000 did, and ₹1,000 stayed with the shop)."""
    order_id, hold = await _hold_in_review(unit_orders, stubs)
    stubs.captured_holds.add(hold.payment_id)
    await unit_orders.cancel(order_id, "changed my mind")
    assert (await unit_orders.result(order_id)).status == OrderStatus.CANCELLED
    [refund] = [r for r in stubs.called("call_gateway") if r.kind is PaymentKind.REFUND]
    assert (refund.amount, refund.currency) == (6_600_000, "INR")


async def test_a_refused_hold_in_another_currency_captured_after_all_is_refunded_in_it(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    """$200.00 held for a ₹100.00 order is refused; the gateway had captured it: $200.00 goes
    back (min($200.00, ₹100.00) gave back $100.00)."""
    order = await pending_order(unit_orders, [("bag", 1)])
    hold = PaymentReceived("pi_usd", 20_000, currency="USD", authorised_only=True)
    stubs.captured_holds.add(hold.payment_id)
    ack = await unit_orders.payment_received(order.id, hold)
    assert not ack.accepted and "refunded" in ack.reason, ack.reason
    [refund] = [r for r in stubs.called("call_gateway") if r.kind is PaymentKind.REFUND]
    assert (refund.payment_id, refund.amount, refund.currency) == ("pi_usd", 20_000, "USD")


async def test_a_razorpay_hold_above_the_total_is_refused_and_released_at_once(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    """Razorpay captures only the whole authorised amount: a ₹120.00 hold for a ₹100.00 order
    could never be captured (three hourly declines, then a cancel)."""
    order = await pending_order(unit_orders, [("bag", 1)])
    hold = PaymentReceived("pay_big", 12_000, "razorpay", currency="INR", authorised_only=True)
    ack = await unit_orders.payment_received(order.id, hold)
    assert not ack.accepted
    assert "₹120.00" in ack.reason and "whole" in ack.reason and "released pay_big" in ack.reason
    assert [r.payment_id for r in stubs.called("release")] == ["pay_big"]
    assert not stubs.called("call_gateway")
    assert (await unit_orders.status(order.id)).status == "PENDING_PAYMENT"


async def test_a_stripe_hold_above_the_total_is_accepted_and_only_the_total_captured(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    order = await pending_order(unit_orders, [("bag", 1)])
    hold = PaymentReceived("pi_big", 12_000, "stripe", currency="INR", authorised_only=True)
    assert (await unit_orders.payment_received(order.id, hold)).accepted
    await wait_status(unit_orders, order.id, "CONFIRMED")
    assert _calls(stubs, PaymentKind.CAPTURE) == [10_000]


async def test_a_refused_hold_captured_after_all_is_recorded_before_its_refund(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    """A second payment's hold reaches a paid order; the gateway had captured it: the capture
    gets its row, then the refund its own (only the refund had one)."""
    order = await pending_order(unit_orders, [("lamp", 1)])
    paid = PaymentReceived("pay-1", order.state.total, currency="INR")
    assert (await unit_orders.payment_received(order.id, paid)).accepted
    await wait_status(unit_orders, order.id, "CONFIRMED")
    second = PaymentReceived("pay-2", 10_000, currency="INR", authorised_only=True)
    stubs.captured_holds.add(second.payment_id)
    ack = await unit_orders.payment_received(order.id, second)
    assert not ack.accepted and "refunded" in ack.reason, ack.reason
    [recorded] = stubs.called("record_refused_payment")
    assert (recorded.payment.payment_id, recorded.payment.amount) == ("pay-2", 10_000)
    assert not recorded.payment.authorised_only
    names = [name for name, _ in stubs.calls]
    assert names.index("record_refused_payment") < names.index("call_gateway")


async def test_a_payment_that_names_no_currency_is_refused(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    """Every sender inside fills the order's currency; an empty one is an event that lacks it."""
    order = await pending_order(unit_orders, [("bag", 1)])
    ack = await unit_orders.payment_received(
        order.id, PaymentReceived("pay-x", 10_000, currency="")
    )
    assert not ack.accepted and "no currency" in ack.reason and "INR" in ack.reason, ack.reason
    assert (await unit_orders.status(order.id)).status == "PENDING_PAYMENT"
    assert not stubs.called("confirm_order")


async def test_a_payment_in_another_currency_is_refused(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    order = await pending_order(unit_orders, [("bag", 1)])
    usd = PaymentReceived("pay-usd", 10_000, currency="USD")
    ack = await unit_orders.payment_received(order.id, usd)
    assert not ack.accepted and "of $100.00 is in USD" in ack.reason, ack.reason
    assert "₹100.00 (INR)" in ack.reason, ack.reason
    ack = await unit_orders.payment_received(
        order.id, PaymentReceived("pay-inr", 10_000, currency="INR")
    )
    assert ack.accepted, ack.reason
    await wait_status(unit_orders, order.id, "CONFIRMED")


async def test_a_hold_whose_capture_attempt_failed_is_released_not_captured_again_on_cancel(
    env: WorkflowEnvironment, unit_orders: OrderClient, stubs: Stubs
) -> None:
    """The hold's capture attempt errored (its outcome unknown) and the order is cancelled
    before the next attempt: the hold is released (and looked up if that fails), never sent
    for capture again, which would charge a cancelled customer only to refund them."""
    from orderflow.contracts.review import ReviewDecision

    order_id, hold = await _hold_in_review(unit_orders, stubs)
    stubs.capture_outage = 1
    review = await unit_orders.status(order_id)
    await unit_orders.decide_review(review.review_id, ReviewDecision(True, "qa"))
    retry = payment_retry_workflow_id(order_id, PaymentKind.CAPTURE)
    await started_workflow(env.client, retry)

    async def errored() -> bool:
        attempts = await env.client.get_workflow_handle(retry).query("attempts")
        return any("gateway error" in a["detail"] for a in attempts)

    await eventually(errored, 20, "the hold's capture attempt failed as a gateway error")
    await unit_orders.cancel(order_id, "changed my mind")
    assert (await unit_orders.result(order_id)).status == OrderStatus.CANCELLED
    captures = [r for r in stubs.called("call_gateway") if r.kind is PaymentKind.CAPTURE]
    assert len(captures) == 1, captures
    assert [r.payment_id for r in stubs.called("release")] == [hold.payment_id]
