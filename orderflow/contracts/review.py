"""The manual review domain: a human decision, awaited by a workflow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

REVIEWS_TASK_QUEUE = "reviews"


class ReviewKind(StrEnum):
    """Why a human has to look (the seed's three review jobs)."""

    HIGH_VALUE = "HIGH_VALUE"
    SUSPICIOUS_PAYMENT = "SUSPICIOUS_PAYMENT"
    RETURN = "RETURN"


class ReviewStatus(StrEnum):
    """A review row: pending until an admin decides."""

    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    WITHDRAWN = "WITHDRAWN"  # the order was cancelled before anyone decided


def review_workflow_id(order_id: str, kind: ReviewKind) -> str:
    """Returns are reviewed apart from the order's own review."""
    return f"review-{'return' if kind is ReviewKind.RETURN else 'order'}-{order_id}"


@dataclass
class ReviewInput:
    """What the reviewer needs to see."""

    review_id: str
    order_id: str
    kind: ReviewKind
    reason: str
    amount: int  # minor units of `currency`
    currency: str = ""
    payment_id: str = ""  # a return: the payment the order accepted, the one its refund gives back


@dataclass
class ReviewDecision:
    """The admin's decision (update `decide`)."""

    approve: bool
    reviewer: str
    note: str = ""


@dataclass
class ReviewOutcome:
    """How a review ended."""

    review_id: str
    order_id: str
    approved: bool
    reviewer: str
    note: str
    withdrawn: bool = False  # ended by the order (cancelled), not by a reviewer


@dataclass
class PendingReview:
    """One row of the pending-review list."""

    review_id: str
    order_id: str
    kind: ReviewKind
    reason: str
    created_at: datetime
