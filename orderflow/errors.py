"""One base error; each message says what was wrong and with which id."""

from __future__ import annotations


class OrderflowError(Exception):
    """Base of every error this project raises on purpose."""


class UnknownOrderError(OrderflowError):
    """No order workflow has this id."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"unknown order {order_id!r}: no workflow order-{order_id} exists")
        self.order_id = order_id


class OrderClosedError(OrderflowError):
    """The order's workflow has ended, so it takes no more signals."""

    def __init__(self, order_id: str, detail: str = "") -> None:
        super().__init__(f"order {order_id!r} is closed{': ' + detail if detail else ''}")
        self.order_id = order_id


class UnknownReviewError(OrderflowError):
    """No pending review has this id."""

    def __init__(self, review_id: str) -> None:
        super().__init__(f"unknown or already decided review {review_id!r}")
        self.review_id = review_id


class InvalidOrderError(OrderflowError):
    """The order request itself is malformed (no items, bad quantity, unknown SKU)."""


class InsecureSettingsError(OrderflowError):
    """A production-shaped start with a default, placeholder or empty secret."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "refusing to start production-shaped (an embedded server is off) with public or"
            " empty secrets: " + "; ".join(problems)
        )
        self.problems = problems


class GatewaySettingsError(OrderflowError):
    """The configured payment gateway cannot run here: simulated in production, or keys missing."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("refusing to start: " + "; ".join(problems))
        self.problems = problems
