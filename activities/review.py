"""Manual review side effects: the review row an admin sees, and its decision."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity

from orderflow.contracts.review import ReviewInput, ReviewOutcome, ReviewStatus
from orderflow.db import Review


class ReviewActivities:
    """Keeps the reviews table in step with ManualReviewWorkflow."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn
    def open_review(self, data: ReviewInput) -> None:
        """Create the pending review (once)."""
        with Session(self.engine) as session:
            if session.get(Review, data.review_id) is None:
                session.add(
                    Review(
                        id=data.review_id,
                        order_id=data.order_id,
                        kind=data.kind.value,
                        reason=data.reason,
                    )
                )
                session.commit()

    @activity.defn
    def close_review(self, outcome: ReviewOutcome) -> None:
        """Store the admin's decision."""
        with Session(self.engine) as session:
            review = session.get(Review, outcome.review_id) or Review(
                id=outcome.review_id, order_id=outcome.order_id, kind="", reason=""
            )
            review.status = (
                ReviewStatus.WITHDRAWN
                if outcome.withdrawn
                else ReviewStatus.APPROVED
                if outcome.approved
                else ReviewStatus.REJECTED
            )
            review.reviewer = outcome.reviewer
            review.note = outcome.note
            review.decided_at = datetime.now(UTC)
            session.add(review)
            session.commit()
