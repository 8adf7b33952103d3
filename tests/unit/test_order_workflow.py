"""OrderWorkflow with every activity stubbed: its decisions alone, in seconds of wall time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from orderflow.contracts.order import (
    NotificationKind,
    OrderState,
    PaymentFailed,
    PaymentReceived,
    Shipment,
)
from orderflow.contracts.payment import PaymentKind, payment_retry_workflow_id
from orderflow.contracts.review import ReviewDecision, ReviewKind, review_workflow_id
from tests.helpers import (
    eventually,
    new_order_id,
    pending_order,
    start_with_payment,
    started_workflow,
    wait_status,
)
from tests.unit.conftest import Stubs


async def test_paid_order_is_confirmed_then_shipped(unit_orders: OrderClient, stubs: Stubs) -> None:
    stubs.prices["shirt"] = 79_900
    order = await pending_order(unit_orders, [("shirt", 2)])
    assert order.state.total == 159_800
    ack = await unit_orders.payment_received(
        order.id, PaymentReceived(payment_id="pay-1", amount=159_800, currency="INR")
    )
    assert ack.accepted, ack.reason
    state = await wait_status(unit_orders, order.id, "CONFIRMED")
    assert state.history[-1].note == f"invoice INV-{order.id}"
    [confirmed] = stubs.called("confirm_order")
    assert confirmed.payment.payment_id == "pay-1" and stubs.called("sync_erp") == [order.id]
    await unit_orders.shipped(order.id, Shipment(carrier="DTDC", tracking_number="X1"))
    assert (await order.handle.result()).status == "SHIPPED"
    assert [n.kind for n in stubs.called("notify")] == [
        NotificationKind.CONFIRMATION,
        NotificationKind.SHIPPING,
    ]
    assert len(stubs.called("ship_reservation")) == 1 and not stubs.called("release_reservation")


async def test_a_refused_confirmation_mail_is_noted_and_the_order_ships(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    stubs.refused_mail = {NotificationKind.CONFIRMATION}
    order = await pending_order(unit_orders, [("mug", 1)])
    await unit_orders.payment_received(
        order.id, PaymentReceived(payment_id="p", amount=10_000, currency="INR")
    )
    await wait_status(unit_orders, order.id, "CONFIRMED")
    await unit_orders.shipped(order.id, Shipment(carrier="DTDC", tracking_number="X1"))
    result = await asyncio.wait_for(order.handle.result(), 20)
    assert result.status == "SHIPPED"
    history = (await unit_orders.status(order.id)).history
    [note] = [h.note for h in history if "mail" in h.note]
    assert note.startswith("confirmation mail not sent: ") and "refused by the queue" in note
    assert len(stubs.called("notify")) == 2  # not retried: the shipping mail came next


async def test_unpaid_order_is_cancelled_after_the_hour(
    env: WorkflowEnvironment, unit_orders: OrderClient, stubs: Stubs
) -> None:
    order = await pending_order(unit_orders, [("mug", 3)])
    assert await env.fast_forward(order.handle, timedelta(minutes=59))
    assert (await unit_orders.status(order.id)).status == "PENDING_PAYMENT"
    await env.fast_forward(order.handle, timedelta(minutes=2))
    result = await order.handle.result()
    assert result.status == "CANCELLED"
    assert "not paid within 60 minutes" in (await unit_orders.status(order.id)).history[-1].note
    [release] = stubs.called("release_reservation")
    assert release.order_id == order.id
    assert [n.kind for n in stubs.called("notify")] == [NotificationKind.CANCELLATION]
    assert not stubs.called("call_gateway")  # nothing was paid, nothing refunded


async def test_declined_capture_succeeds_on_the_retry_an_hour_later(
    env: WorkflowEnvironment, unit_orders: OrderClient, stubs: Stubs
) -> None:
    stubs.declines = 1
    order = await pending_order(unit_orders, [("bag", 1)])
    await unit_orders.payment_failed(order.id, PaymentFailed(payment_id="pf-1", reason="declined"))
    await wait_status(unit_orders, order.id, "PAYMENT_RETRYING")
    retry = await started_workflow(
        env.client, payment_retry_workflow_id(order.id, PaymentKind.CAPTURE)
    )
    await env.fast_forward(retry)  # to completion: the second attempt is an hour after the first
    assert (await retry.result())["succeeded"]
    state = await wait_status(unit_orders, order.id, "CONFIRMED")
    assert state.payment_id == f"capture-{order.id}-2" and state.failed_payments == 1
    assert [r.attempt for r in stubs.called("call_gateway")] == [1, 2]


async def test_high_value_order_waits_for_review_and_approval_confirms(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    stubs.prices["tv"] = 6_500_000
    order = await pending_order(unit_orders, [("tv", 1)])
    await unit_orders.payment_received(
        order.id, PaymentReceived(payment_id="pay-tv", amount=6_500_000, currency="INR")
    )
    await wait_status(unit_orders, order.id, "IN_REVIEW")
    review_id = review_workflow_id(order.id, ReviewKind.HIGH_VALUE)
    await started_workflow(unit_orders.client, review_id)
    [opened] = stubs.called("record_payment")
    assert opened.payment.payment_id == "pay-tv"
    outcome = await unit_orders.decide_review(
        review_id, ReviewDecision(approve=True, reviewer="asha")
    )
    assert outcome.approved
    state = await wait_status(unit_orders, order.id, "CONFIRMED")
    assert [h.status for h in state.history][-3:] == ["IN_REVIEW", "PAID", "CONFIRMED"]
    [review] = stubs.called("open_review")
    assert review.kind is ReviewKind.HIGH_VALUE and "₹65,000.00" in review.reason


async def test_rejected_review_refunds_and_releases(unit_orders: OrderClient, stubs: Stubs) -> None:
    stubs.prices["tv"] = 6_500_000
    order = await pending_order(unit_orders, [("tv", 1)])
    await unit_orders.payment_received(
        order.id, PaymentReceived(payment_id="pay-tv", amount=6_500_000, currency="INR")
    )
    review_id = review_workflow_id(order.id, ReviewKind.HIGH_VALUE)
    await started_workflow(unit_orders.client, review_id)
    await unit_orders.decide_review(
        review_id, ReviewDecision(approve=False, reviewer="ravi", note="fraud risk")
    )
    assert (await order.handle.result()).status == "CANCELLED"
    [refund] = [r for r in stubs.called("call_gateway") if r.kind is PaymentKind.REFUND]
    assert refund.amount == 6_500_000
    assert len(stubs.called("release_reservation")) == 1
    note = (await unit_orders.status(order.id)).history[-1].note
    assert "rejected by ravi: fraud risk" in note and f"refunded refund-{order.id}-1" in note


async def test_cancel_after_confirmation_refunds(unit_orders: OrderClient, stubs: Stubs) -> None:
    order = await pending_order(unit_orders, [("chair", 1)])
    await unit_orders.payment_received(
        order.id, PaymentReceived(payment_id="p", amount=10_000, currency="INR")
    )
    await wait_status(unit_orders, order.id, "CONFIRMED")
    await unit_orders.cancel(order.id, "changed my mind")
    assert (await order.handle.result()).status == "CANCELLED"
    assert [(r.kind, r.amount) for r in stubs.called("call_gateway")] == [
        (PaymentKind.REFUND, 10_000)
    ]
    assert len(stubs.called("release_reservation")) == 1


async def test_out_of_stock_is_rejected(unit_orders: OrderClient, stubs: Stubs) -> None:
    stubs.in_stock = False
    handle = await unit_orders.start_order(new_order_id(), "c", "c@example.com", [("pen", 3)])
    assert (await handle.result()).status == "REJECTED"
    assert not stubs.called("release_reservation") and not stubs.called("notify")


async def test_a_short_payment_sent_with_the_start_is_refunded_not_accepted(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    """₹1.00 sent with the start of a ₹79,999 order arrives before the total is known."""
    stubs.prices["laptop"] = 7_999_900
    order_id = new_order_id()
    await start_with_payment(
        unit_orders,
        order_id,
        [("laptop", 1)],
        PaymentReceived(payment_id="pay-early", amount=100, currency="INR"),
    )

    async def refunded() -> OrderState | None:
        state = await unit_orders.status(order_id)
        return state if state.history[-1].note.startswith("refunded") else None

    state = await eventually(refunded, 10, "the early ₹1.00 refunded")
    assert state.status == "PENDING_PAYMENT" and state.payment_id == ""
    assert state.history[-2].note == "refused payment pay-early: ₹1.00 is not the total ₹79,999.00"
    [refund] = stubs.called("call_gateway")
    assert (refund.kind, refund.amount) == (PaymentKind.REFUND, 100)
    assert not stubs.called("record_payment")
    ack = await unit_orders.payment_received(
        order_id, PaymentReceived("pay-full", 7_999_900, currency="INR")
    )
    assert ack.accepted, ack.reason
    await wait_status(unit_orders, order_id, "IN_REVIEW")  # the full amount goes on as usual
    [recorded] = stubs.called("record_payment")
    assert recorded.payment.payment_id == "pay-full"


async def test_an_order_whose_early_payment_was_refunded_can_refund_again_on_cancel(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    """The refund child's id is per order: a second refund starts once the first one ended."""
    order_id = new_order_id()
    handle = await start_with_payment(
        unit_orders,
        order_id,
        [("lamp", 2)],
        PaymentReceived(payment_id="pay-early", amount=10_000, currency="INR"),
    )

    async def refunded() -> bool:
        return (await unit_orders.status(order_id)).history[-1].note.startswith("refunded")

    await eventually(refunded, 10, "the early ₹100.00 refunded")
    await unit_orders.payment_received(
        order_id, PaymentReceived("pay-full", 20_000, currency="INR")
    )
    await wait_status(unit_orders, order_id, "CONFIRMED")
    await unit_orders.cancel(order_id, "changed my mind")
    assert (await handle.result()).status == "CANCELLED"
    assert [(r.kind, r.amount) for r in stubs.called("call_gateway")] == [
        (PaymentKind.REFUND, 10_000),
        (PaymentKind.REFUND, 20_000),
    ]


async def test_a_reviewed_authorisation_is_captured_for_the_total_only_after_approval(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    stubs.prices["tv"] = 6_500_000
    order = await pending_order(unit_orders, [("tv", 1)])
    held = PaymentReceived(
        payment_id="pi_held", amount=6_600_000, authorised_only=True, currency="INR"
    )
    assert (await unit_orders.payment_received(order.id, held)).accepted
    review_id = review_workflow_id(order.id, ReviewKind.HIGH_VALUE)
    await started_workflow(unit_orders.client, review_id)
    await wait_status(unit_orders, order.id, "IN_REVIEW")
    assert not stubs.called("call_gateway") and not stubs.called("record_payment")
    await unit_orders.decide_review(review_id, ReviewDecision(approve=True, reviewer="asha"))
    state = await wait_status(unit_orders, order.id, "CONFIRMED")
    [capture] = stubs.called("call_gateway")
    assert (capture.kind, capture.amount, capture.payment_id) == (
        PaymentKind.CAPTURE,
        6_500_000,  # the total, not the whole hold
        "pi_held",
    )
    assert capture.idempotency_key == f"{order.id}-capture-pi_held-held-1"  # its own keys
    [confirmed] = stubs.called("confirm_order")
    assert confirmed.payment.amount == 6_500_000 and not confirmed.payment.authorised_only
    assert state.payment_id == f"capture-{order.id}-1" and not stubs.called("release")


async def test_an_authorisation_that_cannot_be_captured_cancels_the_order_and_releases_it(
    env: WorkflowEnvironment, unit_orders: OrderClient, stubs: Stubs
) -> None:
    stubs.declines = 99
    order = await pending_order(unit_orders, [("bag", 1)])
    held = PaymentReceived(
        payment_id="pi_lapsed", amount=10_000, authorised_only=True, currency="INR"
    )
    assert (await unit_orders.payment_received(order.id, held)).accepted
    retry = await started_workflow(
        env.client, payment_retry_workflow_id(order.id, PaymentKind.CAPTURE)
    )
    await env.fast_forward(retry)  # every attempt, an hour apart
    assert (await order.handle.result()).status == "CANCELLED"
    assert {r.kind for r in stubs.called("call_gateway")} == {PaymentKind.CAPTURE}  # no refund
    [release] = stubs.called("release")
    assert (release.payment_id, release.kind) == ("pi_lapsed", PaymentKind.RELEASE)
    note = (await unit_orders.status(order.id)).history[-1].note
    assert "authorisation pi_lapsed not captured: declined" in note and "released pi_lapsed" in note


async def test_an_authorisation_below_the_total_is_refused_and_released_at_once(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    order = await pending_order(unit_orders, [("bag", 1)])
    short = PaymentReceived(
        payment_id="pi_short", amount=9_999, authorised_only=True, currency="INR"
    )
    ack = await unit_orders.payment_received(order.id, short)
    assert not ack.accepted and "₹99.99" in ack.reason and "₹100.00" in ack.reason
    assert "released pi_short" in ack.reason
    assert [r.payment_id for r in stubs.called("release")] == ["pi_short"]
    assert (await unit_orders.status(order.id)).status == "PENDING_PAYMENT"
    assert not stubs.called("call_gateway")


async def test_an_authorisation_the_retry_is_capturing_at_that_moment_is_not_captured_again(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    """The checkout failed and a retry is capturing the PaymentIntent when its authorisation
    arrives (the customer confirmed it again): the retry's capture is the hold's capture, so the
    order is paid by it, not captured a second time (Stripe answers "already captured" and the
    second capture's payment row collides with the first)."""
    stubs.capture_gate = asyncio.Event()
    order = await pending_order(unit_orders, [("lamp", 1)])
    await unit_orders.payment_failed(
        order.id, PaymentFailed(payment_id="pi-1", reason="declined", attempt_id="ch-1")
    )
    await eventually(lambda: _is_set(stubs.capturing), 20, "the retry's capture at the gateway")
    # the stub's capture answers with this id: the retry is capturing this very intent
    held = PaymentReceived(
        payment_id=f"capture-{order.id}-1",
        amount=order.state.total,
        authorised_only=True,
        currency="INR",
    )
    assert (await unit_orders.payment_received(order.id, held)).accepted
    stubs.capture_gate.set()
    state = await wait_status(unit_orders, order.id, "CONFIRMED")
    captures = [r for r in stubs.called("call_gateway") if r.kind is PaymentKind.CAPTURE]
    assert len(captures) == 1, [c.idempotency_key for c in captures]
    assert state.payment_id == held.payment_id and not stubs.called("release")
    [confirmed] = stubs.called("confirm_order")
    assert not confirmed.payment.authorised_only and confirmed.payment.amount == order.state.total


async def _is_set(event: asyncio.Event) -> bool:
    return event.is_set()


async def test_a_cancel_while_a_refused_authorisation_is_being_refunded_refunds_both(
    env: WorkflowEnvironment, unit_orders: OrderClient, stubs: Stubs
) -> None:
    """A second payment's authorisation reaches a paid order; the gateway captured it already
    (a Razorpay auto-capture payment, say), so the `pay` update refunds it, and its refund is
    declined once (retried an hour later). The order is cancelled meanwhile: its own payment is
    refunded too, and the order ends CANCELLED (its refund had the same child id: the start
    failed and with it the order)."""
    order = await pending_order(unit_orders, [("lamp", 1)])
    total = order.state.total
    paid = PaymentReceived(payment_id="pay-1", amount=total, currency="INR")
    assert (await unit_orders.payment_received(order.id, paid)).accepted
    await wait_status(unit_orders, order.id, "CONFIRMED")
    stubs.captured_holds.add("pay-2")
    stubs.refund_declines = 1
    second = PaymentReceived(payment_id="pay-2", amount=total, authorised_only=True, currency="INR")
    answer = asyncio.create_task(unit_orders.payment_received(order.id, second))
    try:
        refund = await started_workflow(  # the refused payment's refund: an id of its own
            env.client, payment_retry_workflow_id(order.id, PaymentKind.REFUND) + "-pay-2"
        )

        async def declined_once() -> bool:
            return bool(stubs.called("call_gateway")) and bool(stubs.called("release"))

        await eventually(declined_once, 20, "the refused authorisation's first refund")
        await unit_orders.cancel(order.id, "customer changed their mind")
        await env.fast_forward(refund)  # the refund's next attempt, an hour on
        ack = await answer
        described = await order.handle.describe()
        assert described.status == WorkflowExecutionStatus.RUNNING or (
            not ack.accepted and "refunded" in ack.reason
        ), f"the order is {described.status.name}; the update: {ack.reason}"
        assert not ack.accepted and "refunded" in ack.reason, ack.reason
    finally:
        answer.cancel()
    assert (await order.handle.result()).status == "CANCELLED"
    refunds = [r for r in stubs.called("call_gateway") if r.kind is PaymentKind.REFUND]
    assert {r.payment_id for r in refunds} == {"pay-1", "pay-2"}
