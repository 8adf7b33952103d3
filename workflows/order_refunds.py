"""OrderWorkflow giving money back: refunds, the release of holds, and the lookup of a hold."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.order_core import OrderCore
from workflows.order_patches import (
    HOLD_LOOKED_UP,
    MANUAL_CAPTURE,
    REFUSED_HOLD_REFUND_APART,
    REFUSED_PAYMENT_RECORDED,
)

with workflow.unsafe.imports_passed_through():
    from activities.order import OrderActivities
    from activities.payment import PaymentActivities
    from orderflow.contracts.order import ConfirmInput, PaymentReceived
    from orderflow.contracts.payment import (
        PAYMENTS_TASK_QUEUE,
        GatewayRequest,
        HoldState,
        HoldStatus,
        PaymentKind,
        PaymentRetryInput,
        PaymentRetryResult,
        gateway_idempotency_key,
        payment_retry_workflow_id,
    )
    from orderflow.money import format_money
    from workflows.payment import GATEWAY_CALL_RETRY, PaymentRetryWorkflow


class OrderRefunds(OrderCore):
    """Money the order gives back: a refused payment, a duplicate capture, a cancelled order's."""

    async def _give_back(self, reason: str, payment: PaymentReceived) -> str:
        """Refund a payment the order refused (a hold: release it), its own row written first."""
        if problem := await self._record_given_back(payment):
            return problem
        return await self._refund(reason, payment)

    async def _record_given_back(self, payment: PaymentReceived) -> str:
        """Write the row of money the order is about to give back; "" or why it was not.

        A hold moved no money and has no row. A payment the database holds for another order is
        not refunded from this one: an operator finds out whose it is.
        """
        if payment.authorised_only or not self._patched(REFUSED_PAYMENT_RECORDED):
            return ""
        try:
            await self._act(
                OrderActivities.record_refused_payment, ConfirmInput(self._order.order_id, payment)
            )
        except (ActivityError, ApplicationError) as err:  # a local activity raises the latter
            cause = err.cause if isinstance(err, ActivityError) and err.cause else err
            workflow.logger.error(
                "order %s: refused payment %s not recorded, so not refunded: %s",
                self._order.order_id,
                payment.payment_id,
                cause,
            )
            return f"NOT REFUNDED: payment {payment.payment_id} not recorded ({cause}): needs an operator"
        return ""

    async def _refund_duplicate(self, capture: PaymentRetryResult) -> None:
        """A retry captured while another payment was accepted: give the retry's capture back."""
        duplicate = PaymentReceived(
            payment_id=capture.payment_id,
            amount=self._total,
            provider=capture.provider or "gateway",
            currency=self._currency,
        )
        reason = f"duplicate capture {capture.payment_id}: order paid by another payment"
        self._note(reason)
        self._note(await self._refund(reason, duplicate))

    async def _refund(
        self, reason: str, payment: PaymentReceived | None = None, *, refused: bool = False
    ) -> str:
        """Give a payment back, the accepted one by default (retried like a capture).

        `refused`: a payment the order refused, given back from the `pay` update. Returns a note
        for the history.
        """
        payment = payment or self._payment
        assert payment is not None
        order_id = self._order.order_id
        child_id = payment_retry_workflow_id(order_id, PaymentKind.REFUND)
        if payment.authorised_only and self._patched(MANUAL_CAPTURE):
            released = await self._release_hold(payment)
            if isinstance(released, str):
                return released
            if released is None:  # orders from before the lookup: how much was taken is guessed
                taken = min(payment.amount, self._total) if self._total else payment.amount
                payment = dataclasses.replace(payment, amount=taken, authorised_only=False)
            else:  # captured after all (not by us): what the gateway took, in the hold's currency
                captured = dataclasses.replace(
                    payment,
                    amount=released.captured,
                    currency=released.currency or payment.currency,
                    authorised_only=False,
                )
                if problem := await self._record_given_back(captured):
                    return problem
                payment = dataclasses.replace(
                    captured, amount=released.captured - released.refunded
                )
            if refused and self._patched(REFUSED_HOLD_REFUND_APART):
                child_id = f"{child_id}-{payment.payment_id}"
        result = await workflow.execute_child_workflow(
            PaymentRetryWorkflow.run,
            PaymentRetryInput(
                order_id=order_id,
                kind=PaymentKind.REFUND,
                amount=payment.amount,
                attempts=self._order.policy.payment_retry_attempts,
                interval_seconds=self._order.policy.payment_retry_interval_seconds,
                reason=reason,
                currency=payment.currency or self._currency,
                payment_id=payment.payment_id,
            ),
            id=child_id,
            task_queue=PAYMENTS_TASK_QUEUE,
        )
        if result.succeeded:
            return f"refunded {result.payment_id}"
        self._refund_failed = True
        workflow.logger.error(
            "order %s: refund of %s declined %d times; repay it by hand",
            order_id,
            format_money(payment.amount, payment.currency or self._currency),
            len(result.attempts),
        )
        return "REFUND FAILED: needs an operator"

    async def _release_hold(self, held: PaymentReceived) -> str | HoldStatus | None:
        """Cancel an uncaptured authorisation at the gateway.

        Returns a note when nothing is left to give back (released, or an operator's); the
        gateway's record of a hold that was captured; None for a captured hold of an order
        from before the lookup.
        """
        order_id = self._order.order_id
        request = GatewayRequest(
            order_id=order_id,
            kind=PaymentKind.RELEASE,
            amount=held.amount,
            attempt=1,
            idempotency_key=gateway_idempotency_key(
                order_id, PaymentKind.RELEASE, 1, held.payment_id
            ),
            currency=held.currency or self._currency,
            payment_id=held.payment_id,
        )
        try:
            response = await workflow.execute_activity_method(
                PaymentActivities.release,
                request,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=GATEWAY_CALL_RETRY,
                task_queue=PAYMENTS_TASK_QUEUE,
            )
        except ActivityError as err:
            failed = f"RELEASE FAILED for {held.payment_id}: {err.cause}"
            if not self._patched(HOLD_LOOKED_UP):
                return f"{failed}; the hold lapses by itself"
            return await self._look_up_hold(request, failed)
        if response.succeeded:
            return f"released {held.payment_id}"
        self._note(f"authorisation {held.payment_id} not released: {response.detail}")
        if not self._patched(HOLD_LOOKED_UP):
            return None
        return await self._look_up_hold(request, f"authorisation {held.payment_id} not released")

    async def _look_up_hold(self, request: GatewayRequest, failed: str) -> str | HoldStatus:
        """Ask the gateway what became of a hold the release did not let go.

        Returns its record when money was taken and is not yet given back, else a note; a hold
        still held or of unknown fate makes the order REFUND_FAILED (money may be held).
        """
        held = request.payment_id
        try:
            status = await workflow.execute_activity_method(
                PaymentActivities.hold_status,
                request,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=GATEWAY_CALL_RETRY,
                task_queue=PAYMENTS_TASK_QUEUE,
            )
        except ActivityError as err:
            status = HoldStatus(held, HoldState.UNKNOWN, detail=f"lookup failed: {err.cause}")
        if status.state is HoldState.RELEASED:
            return f"released {held} ({status.detail})"
        if status.state is HoldState.CAPTURED:
            if status.captured > status.refunded:
                return status
            return f"{held} was captured and is refunded already ({status.detail})"
        self._refund_failed = True
        workflow.logger.error(
            "order %s: authorisation %s is %s at the gateway (%s); release or refund it by hand",
            self._order.order_id,
            held,
            status.state.value,
            status.detail,
        )
        return f"{failed}; the hold is {status.state.value} ({status.detail}): needs an operator"
