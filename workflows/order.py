"""OrderWorkflow: reserve, wait for payment under the auto-cancel timer, review, confirm, ship."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.inventory import InventoryActivities
    from activities.notify import NotificationActivities
    from activities.order import OrderActivities
    from activities.payment import PaymentActivities
    from orderflow.contracts.inventory import (
        INVENTORY_TASK_QUEUE,
        ReleaseInput,
        ShipInput,
        inventory_release_workflow_id,
    )
    from orderflow.contracts.order import (
        ORDER_STATUS,
        ORDER_TOTAL,
        PAYABLE_STATUSES,
        TRANSITIONS,
        CancelRequest,
        ConfirmInput,
        NotificationKind,
        NotifyInput,
        OrderInput,
        OrderResult,
        OrderState,
        OrderStatus,
        PaymentAck,
        PaymentFailed,
        PaymentReceived,
        Shipment,
        StatusChange,
        StatusInput,
    )
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
    from orderflow.contracts.review import (
        REVIEWS_TASK_QUEUE,
        ReviewInput,
        ReviewKind,
        review_workflow_id,
    )
    from orderflow.money import format_money
    from workflows import acceptance
    from workflows.inventory import InventoryReleaseWorkflow
    from workflows.payment import GATEWAY_CALL_RETRY, PaymentRetryWorkflow
    from workflows.review import ManualReviewWorkflow

_Arg = TypeVar("_Arg")
_Ret = TypeVar("_Ret")

DB_TIMEOUT = timedelta(seconds=30)
# a mail is retried for about a minute and a half (a Redis failover), then given up and noted:
# no mail may hold an order. Each interval stays under the local-retry threshold (1 min), so
# retries add no timer commands
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)
# workflow.patched ids: each guards a change that adds commands (docs/VERSIONING.md)
EARLY_PAYMENT_AMOUNT_CHECK = "early-payment-amount-check"
RETRY_FINISHES_CAPTURE = "retry-finishes-capture"
REVIEW_ENDS_ON_CANCEL = "review-ends-on-cancel"
RETRY_CAPTURE_IS_NOT_ITS_OWN_DUPLICATE = "retry-capture-is-not-its-own-duplicate"
MANUAL_CAPTURE = "manual-capture"  # an authorisation is captured after review, released on cancel
RETRY_CAPTURED_THE_HOLD = "retry-captured-the-hold"  # a retry's capture of an accepted hold
# a refused hold that was captured after all is refunded by a child of its own id, beside the
# order's own refund (the `pay` update runs beside the order's run)
REFUSED_HOLD_REFUND_APART = "refused-hold-refund-apart"
# a payment accepted in the activation that ends the capture retry or the auto-cancel timer
PAID_AS_RETRY_ENDED = "paid-as-retry-ended"  # the retry's capture is then the duplicate
PAID_AS_TIMER_FIRED = "paid-as-timer-fired"  # the payment came in time: the order is paid
# a hold that was not released is looked up at the gateway: captured → refunded what was
# taken, in its currency; held or unknown → REFUND_FAILED for an operator (was: "it lapses")
HOLD_LOOKED_UP = "hold-looked-up"
# a hold above the total only where the provider can capture part of it (not Razorpay)
WHOLE_HOLD_ONLY = "whole-hold-only"
# a payment the order refuses and refunds gets its row before its refund gets one
REFUSED_PAYMENT_RECORDED = "refused-payment-recorded"
# a payment that names no currency is refused (every sender inside names the order's)
EMPTY_CURRENCY_REFUSED = "empty-currency-refused"
# Every id above, decided once as the order starts: an order started with this marker has all
# of those changes and records no other marker for them. A marker recorded right after
# place_order (a local activity) failed replay where that activity's marker ended the workflow
# task before it (seen on the time-skipping server): replay resolves the activity before it
# learns of the next task's markers. Orders started before still ask each id where they did.
PATCHES_AT_START = "patches-decided-at-start"
FOLDED_PATCHES = frozenset(
    {
        EARLY_PAYMENT_AMOUNT_CHECK,
        RETRY_FINISHES_CAPTURE,
        REVIEW_ENDS_ON_CANCEL,
        RETRY_CAPTURE_IS_NOT_ITS_OWN_DUPLICATE,
        MANUAL_CAPTURE,
        RETRY_CAPTURED_THE_HOLD,
        REFUSED_HOLD_REFUND_APART,
        PAID_AS_RETRY_ENDED,
        PAID_AS_TIMER_FIRED,
        HOLD_LOOKED_UP,
        WHOLE_HOLD_ONLY,
        REFUSED_PAYMENT_RECORDED,
        EMPTY_CURRENCY_REFUSED,
    }
)


class IllegalTransition(RuntimeError):
    """A status change TRANSITIONS does not allow: a defect in the workflow, never the input."""


@workflow.defn
class OrderWorkflow:
    """One order, from reservation to shipment or cancellation."""

    @workflow.init
    def __init__(self, order: OrderInput) -> None:
        self._order = order
        self._status = OrderStatus.NEW
        self._history: list[StatusChange] = []
        self._total = 0  # minor units of self._currency
        self._currency = ""
        self._payment: PaymentReceived | None = None
        self._failures: list[PaymentFailed] = []
        self._retry_wanted = False
        self._cancel: CancelRequest | None = None
        self._shipment: Shipment | None = None
        self._review_id = ""
        self._refund_failed = False
        # before any handler or command of the first workflow task (FOLDED_PATCHES)
        self._patches_at_start = workflow.patched(PATCHES_AT_START)

    def _patched(self, change: str) -> bool:
        """Whether this order has `change` (one of FOLDED_PATCHES; docs/VERSIONING.md)."""
        assert change in FOLDED_PATCHES, f"{change} is not decided at start"
        return self._patches_at_start or workflow.patched(change)

    # --- the run ---

    @workflow.run
    async def run(self, order: OrderInput) -> OrderResult:
        """Drive the order to SHIPPED, CANCELLED or REJECTED."""
        try:
            placed = await self._act(OrderActivities.place_order, order)
        except (ActivityError, ApplicationError) as err:  # only non-retryable errors get here
            cause = err.cause if isinstance(err, ActivityError) and err.cause else err
            self._set(OrderStatus.REJECTED, f"order could not be placed: {cause}")
            if self._payment is not None:
                self._note(await self._give_back(str(cause), self._payment))
            return await self._end()
        self._total, self._currency = placed.total, placed.currency
        workflow.upsert_search_attributes([ORDER_TOTAL.value_set(placed.total)])
        if not placed.reserved:
            self._set(OrderStatus.REJECTED, placed.reason)
            if self._payment is not None:  # paid before the stock check answered
                self._note(await self._give_back(placed.reason, self._payment))
            return await self._end()
        self._set(
            OrderStatus.PENDING_PAYMENT, f"{format_money(placed.total, placed.currency)} reserved"
        )
        # orders started before this check have no marker and replay without it
        if self._payment is not None and self._patched(EARLY_PAYMENT_AMOUNT_CHECK):
            await self._check_early_payment()

        if not await self._await_payment():
            return await self._cancel_order(refund=True)  # refunds only what was captured
        assert self._payment is not None

        review = self._review_kind()
        if review is not None:
            if not self._payment.authorised_only:  # a hold is recorded once it is captured
                await self._act(
                    OrderActivities.record_payment, ConfirmInput(order.order_id, self._payment)
                )
            approved, note = await self._review(review)
            if not approved:
                self._cancel = self._cancel or CancelRequest(reason=note)
                return await self._cancel_order(refund=True)
            if self._cancel is not None:  # cancelled while under review
                return await self._cancel_order(refund=True)
        # only an authorisation takes this branch, and no order before it had one
        if self._payment.authorised_only and self._patched(MANUAL_CAPTURE):
            if self._cancel is not None or not await self._capture_authorisation():
                return await self._cancel_order(refund=True)  # a hold is released, not refunded

        confirmed = await self._act(
            OrderActivities.confirm_order, ConfirmInput(order.order_id, self._payment)
        )
        self._set(OrderStatus.CONFIRMED, f"invoice {confirmed.invoice_number}")
        # independent of each other: one workflow task schedules both
        await asyncio.gather(self._sync_erp(), self._notify(NotificationKind.CONFIRMATION))

        await workflow.wait_condition(
            lambda: self._shipment is not None or self._cancel is not None
        )
        if self._shipment is None:
            return await self._cancel_order(refund=True)
        await self._act(
            OrderActivities.set_status, StatusInput(order.order_id, OrderStatus.SHIPPED)
        )
        await workflow.execute_activity_method(
            InventoryActivities.ship_reservation,
            ShipInput(order.order_id),
            start_to_close_timeout=DB_TIMEOUT,
            task_queue=INVENTORY_TASK_QUEUE,
        )
        self._set(
            OrderStatus.SHIPPED,
            f"{self._shipment.carrier} {self._shipment.tracking_number}".strip(),
        )
        await self._notify(NotificationKind.SHIPPING, shipment=self._shipment)
        return await self._end()

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

    @staticmethod
    async def _tell(signal: Awaitable[None]) -> None:
        """Signal a child that may have just finished on its own (then there is nothing to say)."""
        try:
            await signal
        except ApplicationError as err:
            workflow.logger.info("child already finished: %s", err)

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

    def _review_kind(self) -> ReviewKind | None:
        assert self._payment is not None
        policy = self._order.policy
        if self._payment.flagged or len(self._failures) >= policy.suspicious_failed_attempts:
            return ReviewKind.SUSPICIOUS_PAYMENT
        if self._total > policy.high_value_threshold:
            return ReviewKind.HIGH_VALUE
        return None

    async def _review(self, kind: ReviewKind) -> tuple[bool, str]:
        order_id = self._order.order_id
        self._review_id = review_workflow_id(order_id, kind)
        reason = (
            f"{len(self._failures)} failed payments before success"
            if kind is ReviewKind.SUSPICIOUS_PAYMENT
            else f"total {format_money(self._total, self._currency)} above {format_money(self._order.policy.high_value_threshold, self._currency)}"
        )
        self._set(OrderStatus.IN_REVIEW, f"{kind.value}: {reason}")
        await self._act(OrderActivities.set_status, StatusInput(order_id, OrderStatus.IN_REVIEW))
        review = await workflow.start_child_workflow(
            ManualReviewWorkflow.run,
            ReviewInput(
                review_id=self._review_id,
                order_id=order_id,
                kind=kind,
                reason=reason,
                amount=self._total,
                currency=self._currency,
            ),
            id=self._review_id,
            task_queue=REVIEWS_TASK_QUEUE,
        )
        await workflow.wait_condition(lambda: review.done() or self._cancel is not None)
        if not review.done() and self._patched(REVIEW_ENDS_ON_CANCEL):
            assert self._cancel is not None  # nobody needs to decide a cancelled order
            why = f"order cancelled: {self._cancel.reason}"
            await self._tell(review.signal(ManualReviewWorkflow.withdraw, why))
        outcome = await review
        verdict = "approved" if outcome.approved else "rejected"
        note = f"review {verdict} by {outcome.reviewer}" + (
            f": {outcome.note}" if outcome.note else ""
        )
        if outcome.approved:
            self._set(OrderStatus.PAID, note)
        return outcome.approved, note

    async def _cancel_order(self, *, refund: bool) -> OrderResult:
        """Refund if paid, release the stock exactly once, mark cancelled, tell the customer."""
        order_id = self._order.order_id
        reason = self._cancel.reason if self._cancel else "cancelled"
        if refund and self._payment is not None:
            reason = f"{reason}; {await self._refund(reason)}"
        await self._release(reason)
        # a refund declined every time keeps the order visible until an operator repays it
        final = OrderStatus.REFUND_FAILED if self._refund_failed else OrderStatus.CANCELLED
        await self._act(OrderActivities.set_status, StatusInput(order_id, final, reason))
        self._set(final, reason)
        await self._notify(NotificationKind.CANCELLATION, reason)
        return await self._end()

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

    async def _release(self, reason: str) -> None:
        try:
            await workflow.execute_child_workflow(
                InventoryReleaseWorkflow.run,
                ReleaseInput(order_id=self._order.order_id, reason=reason),
                id=inventory_release_workflow_id(self._order.order_id),
                task_queue=INVENTORY_TASK_QUEUE,
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info("inventory of order %s already released", self._order.order_id)

    async def _sync_erp(self) -> None:
        try:
            await workflow.execute_local_activity_method(
                OrderActivities.sync_erp,
                self._order.order_id,
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=self._order.policy.erp_attempts),
            )
        except (ActivityError, ApplicationError) as err:  # a local activity raises the latter
            # the order stands; the failed sync is visible in the history for an operator
            cause = err.cause if isinstance(err, ActivityError) else err
            self._note(f"ERP sync failed after {self._order.policy.erp_attempts} attempts: {cause}")

    async def _notify(
        self, kind: NotificationKind, note: str = "", *, shipment: Shipment | None = None
    ) -> None:
        """Send one mail; one that cannot be sent is noted in the history, never the order's end.

        `note` is free text (screened by the email queue's guard); a shipment's carrier and
        tracking number are generated data and go in fields of their own.
        """
        try:
            await workflow.execute_local_activity_method(
                NotificationActivities.notify,
                NotifyInput(
                    order_id=self._order.order_id,
                    kind=kind,
                    note=note,
                    carrier=shipment.carrier if shipment else "",
                    tracking_number=shipment.tracking_number if shipment else "",
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
            )
        except (ActivityError, ApplicationError) as err:  # a local activity raises the latter
            cause = err.cause if isinstance(err, ActivityError) and err.cause else err
            workflow.logger.warning(
                "order %s: %s mail not sent: %s", self._order.order_id, kind, cause
            )
            self._note(f"{kind.name.lower()} mail not sent: {cause}")

    async def _act(self, method: Callable[[Any, _Arg], _Ret], arg: _Arg) -> _Ret:
        """One database step of the order, as a local activity."""
        return await workflow.execute_local_activity_method(
            method, arg, start_to_close_timeout=DB_TIMEOUT
        )

    async def _end(self) -> OrderResult:
        await workflow.wait_condition(workflow.all_handlers_finished)
        return OrderResult(
            order_id=self._order.order_id,
            status=self._status,
            total=self._total,
            currency=self._currency,
        )

    def _set(self, status: OrderStatus, note: str = "") -> None:
        if status not in TRANSITIONS[self._status]:
            # not an ApplicationError: the workflow task fails and retries, the order waits
            raise IllegalTransition(
                f"order {self._order.order_id}: {self._status} → {status} is not in TRANSITIONS"
            )
        self._status = status
        self._history.append(StatusChange(status=status, at=workflow.now(), note=note))
        workflow.upsert_search_attributes([ORDER_STATUS.value_set(status.value)])

    def _note(self, note: str) -> None:
        self._history.append(StatusChange(status=self._status, at=workflow.now(), note=note))

    # --- signals, update, query ---

    @workflow.update
    async def pay(self, payment: PaymentReceived) -> PaymentAck:
        """Report a payment and learn at once whether it was accepted.

        An authorisation the order refuses is released before the answer: nothing else would.
        """
        ack = self._accept(payment)
        if not ack.accepted and payment.authorised_only and self._patched(MANUAL_CAPTURE):
            note = await self._refund(ack.reason, payment, refused=True)
            self._note(note)
            ack.reason = f"{ack.reason}; {note}"
        return ack

    @workflow.signal
    def payment_received(self, payment: PaymentReceived) -> None:
        """Report a payment (fire-and-forget)."""
        self._accept(payment)

    @workflow.signal
    def payment_failed(self, failure: PaymentFailed) -> None:
        """A capture failed at the gateway: retry it (once per order)."""
        if self._payment is not None or self._cancel is not None:
            return
        attempt = (failure.payment_id, failure.attempt_id)
        if any((f.payment_id, f.attempt_id) == attempt for f in self._failures):
            return  # a redelivered failure is one failure
        self._failures.append(failure)
        self._note(f"payment {failure.payment_id} failed: {failure.reason}")
        if self._status != OrderStatus.PAYMENT_RETRYING:
            self._retry_wanted = True

    @workflow.signal
    def cancel(self, request: CancelRequest) -> None:
        """Cancel the order; ignored once it shipped or ended."""
        if self._cancel is None and self._status not in (
            OrderStatus.SHIPPED,
            OrderStatus.CANCELLED,
        ):
            self._cancel = request

    @workflow.signal
    def shipped(self, shipment: Shipment) -> None:
        """The warehouse shipped the order."""
        if self._shipment is None:
            self._shipment = shipment

    @workflow.query
    def status(self) -> OrderState:
        """The current status and its history."""
        return OrderState(
            order_id=self._order.order_id,
            status=self._status,
            total=self._total,
            currency=self._currency,
            history=self._history,
            payment_id=self._payment.payment_id if self._payment else "",
            failed_payments=len(self._failures),
            review_id=self._review_id,
            flagged=self._payment.flagged if self._payment else False,
        )

    def _flag_late(self, payment: PaymentReceived) -> None:
        """The gateway's fraud flag came after the payment (Stripe: charge after payment_intent).

        Before the review decision the order goes to review as flagged; after it, the order
        (paid, confirmed or shipped) is marked flagged for an operator.
        """
        assert self._payment is not None
        self._payment.flagged = True
        self._note(f"payment {payment.payment_id} flagged as risky by {payment.provider}")
        if self._status not in {OrderStatus.NEW, *PAYABLE_STATUSES}:
            workflow.logger.warning(
                "order %s is %s and its payment %s was flagged as risky afterwards",
                self._order.order_id,
                self._status,
                payment.payment_id,
            )

    def _due(self) -> acceptance.Due:
        """What this order is owed, for the acceptance rules (workflows/acceptance.py)."""
        return acceptance.Due(
            order_id=self._order.order_id,
            total=self._total,
            currency=self._currency,
            refuses_empty_currency=lambda: self._patched(EMPTY_CURRENCY_REFUSED),
            whole_hold_only=lambda: self._patched(WHOLE_HOLD_ONLY),
        )

    def _in_currency(self, payment: PaymentReceived) -> bool:
        return acceptance.in_currency(payment, self._due())

    def _currency_refusal(self, payment: PaymentReceived) -> str:
        return acceptance.currency_refusal(payment, self._due())

    def _acceptable(self, payment: PaymentReceived) -> bool:
        return acceptance.acceptable(payment, self._due())

    def _accept(self, payment: PaymentReceived) -> PaymentAck:
        order_id = self._order.order_id
        if self._payment is not None:
            if self._payment.payment_id == payment.payment_id:
                if payment.flagged and not self._payment.flagged:
                    self._flag_late(payment)
                return PaymentAck(
                    accepted=True, status=self._status, reason="duplicate: payment already accepted"
                )
            self._note(
                f"refused second payment {payment.payment_id}: already paid by {self._payment.payment_id}"
            )
            return PaymentAck(
                accepted=False,
                status=self._status,
                reason=f"order {order_id} is already paid by {self._payment.payment_id}",
            )
        if self._cancel is not None or self._status not in {OrderStatus.NEW, *PAYABLE_STATUSES}:
            self._note(f"refused payment {payment.payment_id}: order is {self._status}")
            return PaymentAck(
                accepted=False,
                status=self._status,
                reason=f"order {order_id} is {self._status}: payment refused",
            )
        if self._status != OrderStatus.NEW and (
            refused := acceptance.refusal(payment, self._due())
        ):
            self._note(refused.note)
            return PaymentAck(accepted=False, status=self._status, reason=refused.reason)
        self._payment = payment
        self._note(
            f"payment {payment.payment_id} received"
            f" ({format_money(payment.amount, payment.currency or self._currency)}, {payment.provider})"
        )
        return PaymentAck(accepted=True, status=self._status)
