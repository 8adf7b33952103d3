"""ManualReviewWorkflow: waits for an admin's decision; an approved return is refunded."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.order import OrderActivities
    from activities.review import ReviewActivities
    from orderflow.contracts.order import ORDERS_TASK_QUEUE, OrderStatus, StatusInput
    from orderflow.contracts.payment import (
        PAYMENTS_TASK_QUEUE,
        PaymentKind,
        PaymentRetryInput,
        PaymentRetryResult,
        payment_retry_workflow_id,
    )
    from orderflow.contracts.review import (
        PendingReview,
        ReviewDecision,
        ReviewInput,
        ReviewKind,
        ReviewOutcome,
    )
    from workflows.payment import PaymentRetryWorkflow

DB_TIMEOUT = timedelta(seconds=30)


@workflow.defn
class ManualReviewWorkflow:
    """One review: opened in the database, decided by update `decide`, closed with the decision."""

    @workflow.init
    def __init__(self, data: ReviewInput) -> None:
        self._input = data
        self._created_at = workflow.now()
        self._decision: ReviewDecision | None = None
        self._withdrawn = False

    @workflow.run
    async def run(self, data: ReviewInput) -> ReviewOutcome:
        """Open the review, wait for the decision, record it; refund an approved return."""
        await workflow.execute_activity_method(
            ReviewActivities.open_review, data, start_to_close_timeout=DB_TIMEOUT
        )
        await workflow.wait_condition(lambda: self._decision is not None)
        outcome = self._outcome()
        await workflow.execute_activity_method(
            ReviewActivities.close_review, outcome, start_to_close_timeout=DB_TIMEOUT
        )
        if data.kind is ReviewKind.RETURN and outcome.approved:
            refund = await workflow.execute_child_workflow(
                PaymentRetryWorkflow.run,
                PaymentRetryInput(
                    order_id=data.order_id,
                    kind=PaymentKind.REFUND,
                    amount=data.amount,
                    reason="return approved",
                    currency=data.currency,
                    payment_id=data.payment_id,  # not the gateway's guess of the order's payment
                ),
                id=payment_retry_workflow_id(data.order_id, PaymentKind.REFUND),
                task_queue=PAYMENTS_TASK_QUEUE,
            )
            await workflow.execute_activity_method(
                OrderActivities.set_status,
                self._return_status(refund),
                start_to_close_timeout=DB_TIMEOUT,
                task_queue=ORDERS_TASK_QUEUE,
            )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return outcome

    def _return_status(self, refund: PaymentRetryResult) -> StatusInput:
        """RETURNED once the money is back; a refund declined every time stays visible."""
        order_id = self._input.order_id
        if refund.succeeded:
            return StatusInput(order_id, OrderStatus.RETURNED, f"refunded {refund.payment_id}")
        tried = len(refund.attempts)
        workflow.logger.error(
            "order %s: return approved but the refund was declined %d times; refund it by hand",
            order_id,
            tried,
        )
        note = f"return approved, refund declined {tried} times: needs an operator"
        return StatusInput(order_id, OrderStatus.REFUND_FAILED, note)

    @workflow.signal
    def withdraw(self, reason: str) -> None:
        """The order was cancelled: end the review without a reviewer (ignored once decided)."""
        if self._decision is None:
            self._withdrawn = True
            self._decision = ReviewDecision(approve=False, reviewer="orderflow", note=reason)

    @workflow.update
    async def decide(self, decision: ReviewDecision) -> ReviewOutcome:
        """Approve or reject; answered at once."""
        self._decision = decision
        return self._outcome()

    @decide.validator
    def _check_decision(self, decision: ReviewDecision) -> None:
        if self._decision is not None:
            raise ValueError(
                f"review {self._input.review_id} was already decided by {self._decision.reviewer}"
            )
        if not decision.reviewer.strip():
            raise ValueError(
                f"review {self._input.review_id}: a decision needs the reviewer's name"
            )

    @workflow.query
    def pending(self) -> PendingReview | None:
        """This review as a pending-list row, or None once decided."""
        if self._decision is not None:
            return None
        d = self._input
        return PendingReview(
            review_id=d.review_id,
            order_id=d.order_id,
            kind=d.kind,
            reason=d.reason,
            created_at=self._created_at,
        )

    def _outcome(self) -> ReviewOutcome:
        assert self._decision is not None
        return ReviewOutcome(
            review_id=self._input.review_id,
            order_id=self._input.order_id,
            approved=self._decision.approve,
            reviewer=self._decision.reviewer,
            note=self._decision.note,
            withdrawn=self._withdrawn,
        )
