"""OrderWorkflow's review by a person and its cancellation (refund, stock released, mail)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

from workflows.order_effects import OrderEffects
from workflows.order_patches import REVIEW_ENDS_ON_CANCEL
from workflows.order_refunds import OrderRefunds

with workflow.unsafe.imports_passed_through():
    from activities.order import OrderActivities
    from orderflow.contracts.inventory import (
        INVENTORY_TASK_QUEUE,
        ReleaseInput,
        inventory_release_workflow_id,
    )
    from orderflow.contracts.order import (
        NotificationKind,
        OrderResult,
        OrderStatus,
        StatusInput,
    )
    from orderflow.contracts.review import (
        REVIEWS_TASK_QUEUE,
        ReviewInput,
        ReviewKind,
        review_workflow_id,
    )
    from orderflow.money import format_money
    from workflows.inventory import InventoryReleaseWorkflow
    from workflows.review import ManualReviewWorkflow


class OrderSteps(OrderRefunds, OrderEffects):
    """The steps after the payment that may end the order: the review and the cancellation."""

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
