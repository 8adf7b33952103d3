"""The order domain's wire types and task queue, shared by workflow, activities, client and tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from temporalio.common import SearchAttributeKey

ORDERS_TASK_QUEUE = "orders"

# custom search attributes the order workflow keeps current (Temporal UI / list filters)
ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
ORDER_TOTAL = SearchAttributeKey.for_int("OrderTotal")  # minor units (paise)
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")

# `temporal server start-dev --search-attribute NAME=TYPE` arguments for the keys above
SEARCH_ATTRIBUTE_ARGS = ["OrderStatus=Keyword", "OrderTotal=Int", "CustomerId=Keyword"]


def order_workflow_id(order_id: str) -> str:
    """One workflow per order: starting it twice finds the same run."""
    return f"order-{order_id}"


class OrderStatus(StrEnum):
    """Where an order is; also the `OrderStatus` search attribute."""

    NEW = "NEW"  # started; the stock check has not answered yet
    PENDING_PAYMENT = "PENDING_PAYMENT"
    REJECTED = "REJECTED"
    PAYMENT_RETRYING = "PAYMENT_RETRYING"
    PAID = "PAID"
    IN_REVIEW = "IN_REVIEW"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"
    RETURNED = "RETURNED"
    REFUND_FAILED = "REFUND_FAILED"  # money is owed to the customer: an operator must act


_S = OrderStatus
# Every move an order's status may make: from → the statuses it may go to. OrderWorkflow._set
# refuses any other (the workflow task fails, the order waits for a fixed worker); a new status
# is one row here and the workflow step that sets it. SHIPPED's moves are made by a return's
# review in the database after the order's workflow ended.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    _S.NEW: frozenset({_S.PENDING_PAYMENT, _S.REJECTED}),
    _S.PENDING_PAYMENT: frozenset(
        {_S.PAYMENT_RETRYING, _S.IN_REVIEW, _S.CONFIRMED, _S.CANCELLED, _S.REFUND_FAILED}
    ),
    _S.PAYMENT_RETRYING: frozenset({_S.IN_REVIEW, _S.CONFIRMED, _S.CANCELLED, _S.REFUND_FAILED}),
    _S.IN_REVIEW: frozenset({_S.PAID, _S.CANCELLED, _S.REFUND_FAILED}),
    _S.PAID: frozenset({_S.CONFIRMED, _S.CANCELLED, _S.REFUND_FAILED}),
    _S.CONFIRMED: frozenset({_S.SHIPPED, _S.CANCELLED, _S.REFUND_FAILED}),
    _S.SHIPPED: frozenset({_S.RETURNED, _S.REFUND_FAILED}),
    _S.REJECTED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.RETURNED: frozenset(),
    _S.REFUND_FAILED: frozenset(),
}
# the order's workflow has ended (a return may still move SHIPPED on, see TRANSITIONS)
FINAL_STATUSES = frozenset(
    {OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.SHIPPED, OrderStatus.REFUND_FAILED}
)
# waiting for its payment: a payment is taken (checked against the total), a failure retried
PAYABLE_STATUSES = frozenset({OrderStatus.PENDING_PAYMENT, OrderStatus.PAYMENT_RETRYING})
# paid and settled: the order has exactly its total captured (reconciliation checks this)
PAID_STATUSES = frozenset({OrderStatus.PAID, OrderStatus.CONFIRMED, OrderStatus.SHIPPED})
# money the shop has kept: paid (a review may still be deciding), not cancelled or returned
REVENUE_STATUSES = PAID_STATUSES | {OrderStatus.IN_REVIEW}
# ended without keeping the customer's money
ENDED_UNPAID_STATUSES = frozenset({OrderStatus.CANCELLED, OrderStatus.REJECTED})


@dataclass
class OrderLine:
    """A SKU and how many; the price comes from the catalogue."""

    sku: str
    """The catalogue's stock-keeping unit."""
    quantity: int
    """How many, more than 0."""


@dataclass
class OrderPolicy:
    """The rules an order runs under; the client fills them from the settings (seed defaults)."""

    payment_timeout_seconds: float = 3600.0
    """Auto-cancel an unpaid order after this long (the seed's 1 hour)."""
    high_value_threshold: int = 5_000_000
    """Minor units: a paid order above this (₹50,000) waits for a manual review."""
    suspicious_failed_attempts: int = 2
    """Failed payments before a success that make it suspicious (a manual review)."""
    payment_retry_attempts: int = 3
    """Captures asked again after a failed payment, before the order is cancelled."""
    payment_retry_interval_seconds: float = 3600.0
    """Time between those attempts (the seed's hour; durable across restarts)."""
    erp_attempts: int = 2
    """Tries of the ERP sync before the order goes on without it (logged, not failed)."""


@dataclass
class OrderInput:
    """What the order service starts an order with."""

    order_id: str
    """The order service's id; the workflow id is `order-<order_id>`."""
    customer_id: str
    """Kept as the `CustomerId` search attribute."""
    email: str
    """Where the order's mails go."""
    items: list[OrderLine]
    """At least one line."""
    policy: OrderPolicy = field(default_factory=OrderPolicy)
    """The rules this order runs under."""


@dataclass
class PaymentReceived:
    """The gateway took the customer's money (signal or update `payment_received`)."""

    payment_id: str
    """The gateway's id of the payment (Stripe: the PaymentIntent; Razorpay: the payment)."""
    amount: int
    """Minor units of `currency`."""
    provider: str = "simulated"
    """The provider's registry name (`stripe`, `razorpay`)."""
    flagged: bool = False
    """The gateway's or a rule's fraud flag: forces a manual review."""
    currency: str = ""
    """ISO 4217; must be the order's (empty is refused; orders from before took it as theirs)."""
    authorised_only: bool = False
    """A manual-capture authorisation: the money is held, the order captures its total later."""


@dataclass
class PaymentFailed:
    """A capture attempt failed at the gateway; the order starts payment retries."""

    payment_id: str
    """The gateway's id of the payment that failed."""
    reason: str
    """The gateway's reason (a decline code, "insufficient funds")."""
    provider: str = "simulated"
    """The provider's registry name."""
    attempt_id: str = ""
    """The failed attempt itself (Stripe: the charge; one PaymentIntent spans many attempts)."""


@dataclass
class PaymentAck:
    """The answer to the payment update: accepted or refused, and why."""

    accepted: bool
    """Whether the order took the payment (a refused one is refunded or released)."""
    status: OrderStatus | None
    """The order's status after it; None when the order could not be asked."""
    reason: str = ""
    """Why it was refused."""


@dataclass
class CancelRequest:
    """A customer or operator cancels the order."""

    reason: str = "cancelled by customer"
    """Kept in the history and put in the cancellation mail."""


@dataclass
class Shipment:
    """The warehouse shipped the order."""

    carrier: str = ""
    """The carrier's name, for the shipping mail."""
    tracking_number: str = ""
    """The carrier's tracking number, for the shipping mail."""


@dataclass
class StatusChange:
    """One entry of an order's history."""

    status: OrderStatus
    """The status the order moved to."""
    at: datetime
    """When (workflow time, UTC)."""
    note: str = ""
    """Why, in words (a refusal's reason, the review's outcome)."""


@dataclass
class OrderState:
    """The status query's answer."""

    order_id: str
    """The order."""
    status: OrderStatus
    """Where it is now."""
    total: int
    """Minor units of `currency`."""
    currency: str
    """ISO 4217."""
    history: list[StatusChange] = field(default_factory=list)
    """Every status it went through, oldest first."""
    payment_id: str = ""
    """The payment it kept (empty until paid)."""
    failed_payments: int = 0
    """Failed payments reported so far."""
    review_id: str = ""
    """Its manual review, if one was opened."""
    flagged: bool = False
    """The gateway flagged the payment as risky (possibly after confirming)."""


@dataclass
class OrderResult:
    """How an order ended."""

    order_id: str
    """The order."""
    status: OrderStatus
    """Its final status (one of FINAL_STATUSES)."""
    total: int
    """Minor units of `currency`."""
    currency: str = ""
    """ISO 4217."""


# --- activity payloads ---


@dataclass
class PlaceOrderResult:
    """The order row and its reservation, or why stock could not be reserved."""

    reserved: bool
    total: int  # minor units of the order's currency
    currency: str
    reason: str = ""


@dataclass
class ConfirmInput:
    """Record the payment, render the invoice and mark the order confirmed, in one transaction."""

    order_id: str
    payment: PaymentReceived


@dataclass
class ConfirmResult:
    """The invoice generated for a confirmed order."""

    invoice_number: str


@dataclass
class StatusInput:
    """Mirror a status into the database."""

    order_id: str
    status: OrderStatus
    note: str = ""


@dataclass
class ErpSyncResult:
    """Where the order went: the ERP's answer or the local stand-in's record."""

    order_id: str
    target: str


class NotificationKind(StrEnum):
    """Mails an order sends; each becomes one email job."""

    CONFIRMATION = "order-confirmation"
    CANCELLATION = "order-cancelled"
    SHIPPING = "shipping-notification"


@dataclass
class NotifyInput:
    """One customer notification about an order."""

    order_id: str
    kind: NotificationKind
    note: str = ""  # free text (a cancellation reason a person may have typed)
    carrier: str = ""  # the warehouse's shipment (generated, like the tracking number)
    tracking_number: str = ""


@dataclass
class NotifyResult:
    """The job that carries the notification (deterministic id: a retry never mails twice)."""

    job_id: str
    channel: str
