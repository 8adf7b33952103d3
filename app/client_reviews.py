"""The order client's returns and manual reviews (OrderClient inherits them)."""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from orderflow.contracts.order import OrderState, OrderStatus
from orderflow.contracts.payment import PaymentKind, PaymentStatus
from orderflow.contracts.review import (
    REVIEWS_TASK_QUEUE,
    PendingReview,
    ReviewDecision,
    ReviewInput,
    ReviewKind,
    ReviewOutcome,
    ReviewStatus,
    review_workflow_id,
)
from orderflow.db import Order, Payment, Review
from orderflow.errors import (
    InvalidOrderError,
    OrderClosedError,
    UnknownOrderError,
    UnknownReviewError,
)
from workflows.review import ManualReviewWorkflow


class OrderReviews:
    """Returns and manual reviews: a return opens a review; a decision approves or rejects."""

    client: Client
    engine: Engine | None

    async def status(self, order_id: str) -> OrderState:
        """The order's state (OrderClient's query)."""
        raise NotImplementedError

    async def request_return(self, order_id: str, reason: str) -> str:
        """Open a manual review for a return request on a shipped order; approval refunds it.

        Args:
            order_id: the shipped order.
            reason: the customer's reason, shown to the reviewer.

        Returns:
            The review's id (the same for a second request on the same order).

        Raises:
            InvalidOrderError: the order is not shipped.
            UnknownOrderError: no such order.
        """
        total, currency, status = await self._order_total_and_status(order_id)
        if status != OrderStatus.SHIPPED:
            raise InvalidOrderError(
                f"order {order_id!r} is {status}: only a shipped order can be returned"
                + ("; cancel it instead" if status == OrderStatus.CONFIRMED else "")
            )
        review_id = review_workflow_id(order_id, ReviewKind.RETURN)
        # the payment the order kept: a real gateway asked for "the order's payment" picks its
        # newest, which may be a duplicate capture already refunded
        accepted = await self._kept_payment(order_id)
        try:
            await self.client.start_workflow(
                ManualReviewWorkflow.run,
                ReviewInput(
                    review_id=review_id,
                    order_id=order_id,
                    kind=ReviewKind.RETURN,
                    reason=reason,
                    amount=total,
                    currency=currency,
                    payment_id=accepted,
                ),
                id=review_id,
                task_queue=REVIEWS_TASK_QUEUE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        except WorkflowAlreadyStartedError:
            pass
        return review_id

    async def pending_reviews(self) -> list[PendingReview]:
        """Reviews waiting for an admin, oldest first."""
        if self.engine is None:
            return await self._pending_reviews_from_visibility()
        # on a thread: a database that does not answer must not stall the event loop
        return await asyncio.to_thread(self._pending_reviews_from_db, self.engine)

    @staticmethod
    def _pending_reviews_from_db(engine: Engine) -> list[PendingReview]:
        with Session(engine) as session:
            rows = session.exec(
                select(Review)
                .where(Review.status == ReviewStatus.PENDING)
                .order_by(col(Review.created_at))
            ).all()
        return [
            PendingReview(
                review_id=r.id,
                order_id=r.order_id,
                kind=ReviewKind(r.kind),
                reason=r.reason,
                created_at=r.created_at,
            )
            for r in rows
        ]

    async def decide_review(self, review_id: str, decision: ReviewDecision) -> ReviewOutcome:
        """Approve or reject a pending review.

        Args:
            review_id: the review (`orderflow reviews list` shows them).
            decision: approve or reject, who decided and their note.

        Returns:
            What the decision did (approved, and the refund if one was made).

        Raises:
            UnknownReviewError: no such review pending.
        """
        handle = self.client.get_workflow_handle(review_id)
        try:
            return await handle.execute_update(ManualReviewWorkflow.decide, decision)
        except WorkflowUpdateFailedError as err:
            raise UnknownReviewError(review_id) from err
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise UnknownReviewError(review_id) from err
            raise

    async def _pending_reviews_from_visibility(self) -> list[PendingReview]:
        found: list[PendingReview] = []
        query = "WorkflowType='ManualReviewWorkflow' AND ExecutionStatus='Running'"
        async for wf in self.client.list_workflows(query):
            info = await self.client.get_workflow_handle(wf.id).query(ManualReviewWorkflow.pending)
            if info is not None:
                found.append(info)
        return found

    async def _kept_payment(self, order_id: str) -> str:
        """The payment id of the capture the order kept.

        From the payments table when there is a database: the workflow's history, which knows
        it too, is deleted 72 h after the order closed (the namespace's retention).

        Raises:
            InvalidOrderError: no capture of the order is left unrefunded, or several are and
                the workflow that knows which it kept is gone.
        """
        if self.engine is None:
            return (await self.status(order_id)).payment_id
        kept = await asyncio.to_thread(self._unrefunded_captures, self.engine, order_id)
        if len(kept) == 1:
            return kept[0]
        if not kept:
            raise InvalidOrderError(f"order {order_id!r} has no captured payment left to refund")
        try:  # a duplicate capture whose refund has not landed yet
            return (await self.status(order_id)).payment_id
        except (UnknownOrderError, OrderClosedError) as err:
            raise InvalidOrderError(
                f"order {order_id!r} has {len(kept)} captures not refunded ({', '.join(kept)})"
                " and its workflow is gone: refund the right one by hand"
            ) from err

    @staticmethod
    def _unrefunded_captures(engine: Engine, order_id: str) -> list[str]:
        """Payment ids of the order's succeeded captures not wholly given back, oldest first."""
        with Session(engine) as session:
            rows = session.exec(
                select(Payment)
                .where(Payment.order_id == order_id, Payment.status == PaymentStatus.SUCCEEDED)
                .order_by(col(Payment.id))
            ).all()
        refunded: dict[str, int] = {}
        for row in rows:
            if row.kind == PaymentKind.REFUND:
                refunded[row.refund_of] = refunded.get(row.refund_of, 0) + row.amount
        return [
            row.payment_id
            for row in rows
            if row.kind == PaymentKind.CAPTURE and row.amount > refunded.get(row.payment_id, 0)
        ]

    async def _order_total_and_status(self, order_id: str) -> tuple[int, str, str]:
        """(total in minor units, currency, status) of an order."""
        if self.engine is not None:
            with Session(self.engine) as session:
                order = session.get(Order, order_id)
                if order is None:
                    raise UnknownOrderError(order_id)
                return order.total, order.currency, order.status
        state = await self.status(order_id)
        return state.total, state.currency, state.status
