"""The payment domain: retries of captures and refunds, and the gateway's payloads."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

PAYMENTS_TASK_QUEUE = "payments"
WEBHOOK_QUEUE = "payment-webhook-queue"  # the seed's bridge queue name, shared with Node producers


class WebhookJob(StrEnum):
    """Job names of the payment webhook queue."""

    STRIPE = "stripe-webhook"
    RAZORPAY = "razorpay-webhook"
    RECONCILIATION = "payment-reconciliation"


class PaymentKind(StrEnum):
    """What the gateway is asked to do."""

    CAPTURE = "capture"
    REFUND = "refund"


class PaymentStatus(StrEnum):
    """How a capture or refund ended at the gateway (the payments table's status)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookEventStatus(StrEnum):
    """What became of a recorded gateway event (the webhook events table's status)."""

    RECEIVED = "RECEIVED"  # recorded, not yet applied (or a transient error will retry it)
    APPLIED = "APPLIED"
    IGNORED = "IGNORED"  # nothing to do (a failure reported for an order that already ended)
    UNAPPLIED = "UNAPPLIED"  # money the order refused (closed, already paid): an operator acts
    REJECTED = "REJECTED"  # malformed, or for an order nobody knows


def payment_retry_workflow_id(order_id: str, kind: PaymentKind) -> str:
    """One retry run per order and kind."""
    return f"payment-{kind.value}-{order_id}"


@dataclass
class PaymentRetryInput:
    """Try a capture or refund up to `attempts` times, `interval_seconds` apart."""

    order_id: str
    kind: PaymentKind
    amount: int  # minor units of `currency`
    attempts: int = 3
    interval_seconds: float = 3600.0
    reason: str = ""
    currency: str = ""


@dataclass
class PaymentAttempt:
    """One try at the gateway."""

    attempt: int
    succeeded: bool
    payment_id: str = ""
    detail: str = ""
    provider: str = ""


@dataclass
class PaymentRetryResult:
    """How the retries ended."""

    order_id: str
    kind: PaymentKind
    succeeded: bool
    payment_id: str = ""
    provider: str = ""
    attempts: list[PaymentAttempt] = field(default_factory=list)
    stopped: str = ""  # why the retries were stopped early (the order was paid or cancelled)


@dataclass
class GatewayRequest:
    """One capture or refund call; the idempotency key makes a repeated call one charge."""

    order_id: str
    kind: PaymentKind
    amount: int  # minor units of `currency`
    attempt: int
    idempotency_key: str
    currency: str = ""


@dataclass
class GatewayResponse:
    """The gateway's answer; declined is a business outcome, not an error."""

    succeeded: bool
    payment_id: str = ""
    detail: str = ""
    provider: str = ""
