"""OrderWorkflow taking its payment: the wait under the auto-cancel timer, capture retries, holds."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

from workflows.order_patches import (
    PAID_AS_RETRY_ENDED,
    PAID_AS_TIMER_FIRED,
    RETRY_CAPTURE_IS_NOT_ITS_OWN_DUPLICATE,
    RETRY_CAPTURED_THE_HOLD,
    RETRY_FINISHES_CAPTURE,
)
from workflows.order_refunds import OrderRefunds

with workflow.unsafe.imports_passed_through():
    from activities.order import OrderActivities
    from orderflow.contracts.order import (
        CancelRequest,
        OrderStatus,
        PaymentReceived,
        StatusInput,
    )
    from orderflow.contracts.payment import (
        PAYMENTS_TASK_QUEUE,
        PaymentKind,
        PaymentRetryInput,
        PaymentRetryResult,
        payment_retry_workflow_id,
    )
    from orderflow.money import format_money
    from workflows.payment import PaymentRetryWorkflow


class OrderPayments(OrderRefunds):
    """The order's payment: checked, waited for, retried, or captured from an authorisation."""

    async def _check_early_payment(self) -> None:
        """A payment accepted before the total was known must match it; a wrong one goes back."""
        early = self._payment
        assert early is not None
        if self._acceptable(early):
            return
        self._payment = None  # the order takes a correct payment while this one is refunded
        paid = format_money(early.amount, early.currency or self._currency)
        reason = (
            f"refused payment {early.payment_id}: {paid} is not the total "
            f"{format_money(self._total, self._currency)}"
            if self._in_currency(early)
            else f"refused {self._currency_refusal(early)}"
        )
        self._note(reason)
        self._note(await self._give_back(reason, early))

    async def _await_payment(self) -> bool:
        """Wait for payment under the auto-cancel timer; a failed payment runs the retries instead."""
        policy = self._order.policy
        deadline = workflow.now() + timedelta(seconds=policy.payment_timeout_seconds)
        while True:
            if self._payment is not None:
                return True
            if self._cancel is not None:
                return False
            if self._retry_wanted:
                self._retry_wanted = False
                result = await self._retry_capture()
                if result is not None and result.succeeded:
                    self._payment = PaymentReceived(
                        payment_id=result.payment_id,
                        amount=self._total,
                        provider=result.provider or "gateway",
                        currency=self._currency,
                    )
                    return self._cancel is None  # cancelled while capturing: refund it
                if self._payment is None and self._cancel is None:
                    tried = len(result.attempts) if result else 0
                    self._cancel = CancelRequest(
                        reason=f"payment failed: {tried} capture attempts declined"
                    )
                continue
            remaining = (deadline - workflow.now()).total_seconds()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await workflow.wait_condition(
                    lambda: (
                        self._payment is not None or self._cancel is not None or self._retry_wanted
                    ),
                    timeout=timedelta(seconds=remaining),
                    timeout_summary="auto-cancel unpaid order",
                )
            except TimeoutError:
                if self._payment is not None and self._patched(PAID_AS_TIMER_FIRED):
                    return True  # accepted in the activation the timer fired in
                minutes = policy.payment_timeout_seconds / 60
                self._cancel = CancelRequest(reason=f"not paid within {minutes:g} minutes")
                return False

    async def _capture_authorisation(self) -> bool:
        """Capture the order's total from its authorisation, through the capture retries.

        Returns True once captured (the order's payment is then the captured one); False when
        it could not be captured or the order was cancelled meanwhile (the caller cancels it:
        a hold is released, a capture that landed anyway is refunded).
        """
        held = self._payment
        assert held is not None
        order_id = self._order.order_id
        self._note(
            f"capturing {format_money(self._total, self._currency)}"
            f" of authorisation {held.payment_id}"
        )
        capture = self._capture_input(f"authorisation {held.payment_id}", held.payment_id)
        capture.authorisation = True
        child = await workflow.start_child_workflow(
            PaymentRetryWorkflow.run,
            capture,
            id=payment_retry_workflow_id(order_id, PaymentKind.CAPTURE),
            task_queue=PAYMENTS_TASK_QUEUE,
        )
        await workflow.wait_condition(lambda: child.done() or self._cancel is not None)
        if not child.done():  # an attempt may be at the gateway: hear how it ended
            await self._tell(child.signal(PaymentRetryWorkflow.stop, "order cancelled"))
        result = await child
        if result.succeeded:
            self._payment = PaymentReceived(
                payment_id=result.payment_id,
                amount=self._total,
                provider=result.provider or held.provider,
                flagged=held.flagged,
                currency=self._currency,
            )
            return self._cancel is None
        if self._cancel is None:
            why = result.attempts[-1].detail if result.attempts else "no attempt made"
            self._cancel = CancelRequest(
                reason=f"authorisation {held.payment_id} not captured: {why}"
            )
        return False

    def _capture_input(self, reason: str, payment_id: str) -> PaymentRetryInput:
        policy = self._order.policy
        return PaymentRetryInput(
            order_id=self._order.order_id,
            kind=PaymentKind.CAPTURE,
            amount=self._total,
            attempts=policy.payment_retry_attempts,
            interval_seconds=policy.payment_retry_interval_seconds,
            reason=reason,
            currency=self._currency,
            payment_id=payment_id,
        )

    async def _retry_capture(self) -> PaymentRetryResult | None:
        """Run the capture retries; a payment or cancel arriving meanwhile stops them."""
        self._set(OrderStatus.PAYMENT_RETRYING, self._failures[-1].reason if self._failures else "")
        await self._act(
            OrderActivities.set_status,
            StatusInput(self._order.order_id, OrderStatus.PAYMENT_RETRYING),
        )
        last = self._failures[-1] if self._failures else None
        child = await workflow.start_child_workflow(
            PaymentRetryWorkflow.run,
            self._capture_input(last.reason if last else "", last.payment_id if last else ""),
            id=payment_retry_workflow_id(self._order.order_id, PaymentKind.CAPTURE),
            task_queue=PAYMENTS_TASK_QUEUE,
        )
        await workflow.wait_condition(
            lambda: child.done() or self._payment is not None or self._cancel is not None
        )
        if not child.done():
            if not self._patched(RETRY_FINISHES_CAPTURE):
                child.cancel()  # orders started before this fix: the capture's result is lost
                try:
                    await child
                except (ChildWorkflowError, asyncio.CancelledError):
                    pass
                return None
            # an attempt may be at the gateway: stop further ones and hear how it ended
            why = "order paid" if self._payment is not None else "order cancelled"
            await self._tell(child.signal(PaymentRetryWorkflow.stop, why))
            return await self._beside_accepted_payment(await child)
        # the child may end in the very activation a payment is accepted in (both kept, before)
        if self._payment is not None and self._patched(PAID_AS_RETRY_ENDED):
            return await self._beside_accepted_payment(child.result())
        return child.result()

    async def _beside_accepted_payment(
        self, result: PaymentRetryResult
    ) -> PaymentRetryResult | None:
        """The retry's result once a payment may have been accepted meanwhile.

        None: the order is paid by the accepted payment, and a capture the retry made beside it
        was given back (or was that very payment).
        """
        if result.succeeded and self._payment is not None:
            if self._payment.payment_id == result.payment_id and self._patched(
                RETRY_CAPTURE_IS_NOT_ITS_OWN_DUPLICATE
            ):
                # the gateway's webhook of this very capture came first; or its
                # authorisation did: the retry captured the hold, which is taken, not again
                if self._payment.authorised_only and self._patched(RETRY_CAPTURED_THE_HOLD):
                    self._payment = dataclasses.replace(
                        self._payment, amount=self._total, authorised_only=False
                    )
                return None
            await self._refund_duplicate(result)
            return None
        return result
