"""The payment domain: retries of captures and refunds, and the gateway's payloads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

PAYMENTS_TASK_QUEUE = "payments"
WEBHOOK_QUEUE = "payment-webhook-queue"  # the seed's bridge queue name, shared with Node producers


class GatewayName(StrEnum):
    """The payment gateway a deployment uses (ORDERFLOW_GATEWAY); also the payments' provider."""

    SIMULATED = "simulated"  # moves no money: the embedded demo and tests only
    STRIPE = "stripe"
    RAZORPAY = "razorpay"


class GatewayMode(StrEnum):
    """Whether the configured gateway moves real money, as its API key says."""

    LIVE = "live"  # a live_prefixes key (GatewaySettingsSpec): real money
    TEST = "test"  # a test_prefixes key: the gateway's test mode (staging)
    SIMULATED = "simulated"  # no gateway at all
    UNKNOWN = "unknown"  # a key of neither prefix (the gateway decides)


@dataclass(frozen=True)
class KeyKind:
    """The kind of key one setting holds, told by how it starts."""

    prefixes: tuple[str, ...]
    """What the key starts with (`sk_`, `rk_`); another key there fails every call."""
    description: str
    """The kind in words, for the refusal (`a secret key (sk_… or restricted rk_…)`)."""


@dataclass(frozen=True)
class GatewaySettingsSpec:
    """The settings of one real gateway, by name: orderflow/settings.py checks them at start.

    The foundation cannot read payments/, so the table lives here; each provider module in
    payments/providers/ points at its row.
    """

    name: GatewayName
    """`ORDERFLOW_GATEWAY`'s value that selects it, and its provider's registry name."""
    keys: tuple[str, ...]
    """The Settings fields it cannot start without (`stripe_api_key`), in the order named."""
    mode_key: str
    """The Settings field whose prefix says live or test mode (one of `keys`)."""
    live_prefixes: tuple[str, ...]
    """What a live-mode key in `mode_key` starts with (`sk_live_`): it moves real money."""
    test_prefixes: tuple[str, ...]
    """What a test-mode key in `mode_key` starts with (`sk_test_`): staging."""
    webhook_secret: str
    """The Settings field of its webhook signing secret (a guarded secret)."""
    key_kinds: Mapping[str, KeyKind] = field(default_factory=dict)
    """Settings field → the kind of key it must hold (fields not listed take any value)."""
    partial_capture: bool = False
    """Its capture can take part of a hold and let the rest go (Stripe's amount_to_capture)."""


GATEWAY_SETTINGS: Mapping[GatewayName, GatewaySettingsSpec] = MappingProxyType(
    {
        GatewayName.STRIPE: GatewaySettingsSpec(
            name=GatewayName.STRIPE,
            keys=("stripe_api_key",),
            mode_key="stripe_api_key",
            live_prefixes=("sk_live_", "rk_live_"),
            test_prefixes=("sk_test_", "rk_test_"),
            webhook_secret="stripe_webhook_secret",
            key_kinds={
                "stripe_api_key": KeyKind(("sk_", "rk_"), "a secret key (sk_… or restricted rk_…)")
            },
            partial_capture=True,
        ),
        # Razorpay captures exactly the authorised amount or nothing, so a larger hold there
        # could never be captured
        GatewayName.RAZORPAY: GatewaySettingsSpec(
            name=GatewayName.RAZORPAY,
            keys=("razorpay_key_id", "razorpay_key_secret"),
            mode_key="razorpay_key_id",
            live_prefixes=("rzp_live_",),
            test_prefixes=("rzp_test_",),
            webhook_secret="razorpay_webhook_secret",
            key_kinds={
                "razorpay_key_id": KeyKind(("rzp_",), "a key id (rzp_test_… or rzp_live_…)")
            },
        ),
    }
)

# providers whose capture can take part of a hold and let the rest go; the simulated gateway
# holds nothing, so any part of its "hold" can be taken
PARTIAL_CAPTURE_PROVIDERS = frozenset(
    {GatewayName.SIMULATED.value}
    | {name.value for name, spec in GATEWAY_SETTINGS.items() if spec.partial_capture}
)


class WebhookJob(StrEnum):
    """Job names of the payment webhook queue."""

    STRIPE = "stripe-webhook"
    RAZORPAY = "razorpay-webhook"
    RECONCILIATION = "payment-reconciliation"


# Fields of a webhook job (payments.events.GatewayEvent) taken from the gateway's signed body or
# made by us: ids, amounts, kinds. The payload guard screens them by name only; `reason` (the
# gateway's text, which may echo what a customer typed) is free text and screened by value too
WEBHOOK_SYSTEM_FIELDS = frozenset(
    {"provider", "event_id", "type", "kind", "order_id", "payment_id", "amount_minor", "currency",
     "refund_id", "flagged", "attempt_id", "refund_cumulative", "refunds_listed",
     "refunded_total", "risk_charge"}
)  # fmt: skip


class PaymentKind(StrEnum):
    """What the gateway is asked to do."""

    CAPTURE = "capture"
    REFUND = "refund"
    RELEASE = "release"  # let an uncaptured authorisation go; moves no money, no payment row


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
    # a payment the order already holds in the payments table (a late redelivery): nothing to do
    DUPLICATE = "DUPLICATE"
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
    payment_id: str = ""  # a refund: the captured payment it gives back (empty: the order's)
    # the capture of a hold the order accepted: keys of its own, never those of the retries
    # of a failed payment under the same id (their declines would be replayed as its answers)
    authorisation: bool = False


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
    payment_id: str = ""  # a refund: the gateway's id of the payment given back


def gateway_idempotency_key(
    order_id: str, kind: PaymentKind, attempt: int, payment_id: str = "", *, held: bool = False
) -> str:
    """One key per order, kind and attempt (and refunded payment), never per workflow run.

    A retried activity, a restarted worker and a reset workflow send the same key, so the
    gateway answers the first call's result instead of charging or refunding again. `held`:
    the capture of an accepted authorisation, apart from a failed payment's retries.
    """
    of = f"-{payment_id}" if payment_id else ""
    return f"{order_id}-{kind.value}{of}{'-held' if held else ''}-{attempt}"


@dataclass
class GatewayResponse:
    """The gateway's answer; declined is a business outcome, not an error."""

    succeeded: bool
    payment_id: str = ""
    detail: str = ""
    provider: str = ""


class HoldState(StrEnum):
    """What became of an authorisation at the gateway (PaymentActivities.hold_status)."""

    HELD = "held"  # authorised, not captured: the money is still held on the card
    RELEASED = "released"  # cancelled, failed or lapsed uncaptured: nothing held, nothing taken
    CAPTURED = "captured"  # taken, in whole or in part (`captured`), perhaps partly refunded
    UNKNOWN = "unknown"  # the gateway does not know the id


@dataclass
class HoldStatus:
    """An authorisation as the gateway has it now; amounts in minor units of `currency`."""

    payment_id: str
    state: HoldState
    captured: int = 0  # taken from the hold (a hold captured by someone else: maybe all of it)
    refunded: int = 0  # already given back
    currency: str = ""  # the hold's own, which may not be the order's
    detail: str = ""  # the gateway's own word for it (requires_capture, authorized, ...)


@dataclass
class GatewayPayment:
    """One payment as the gateway lists it (reconciliation compares these with our table)."""

    provider: str
    payment_id: str
    order_id: str
    status: str  # the gateway's own word: succeeded, requires_capture, captured, failed, ...
    captured: int  # minor units of `currency` taken
    refunded: int  # minor units given back
    currency: str
    created: float  # Unix time


@dataclass
class GatewayRefund:
    """One refund of a payment as the gateway lists it (each by its own id)."""

    provider: str
    refund_id: str
    payment_id: str  # the payment it gives back
    order_id: str  # from the refund's metadata / notes ("" if made elsewhere)
    amount: int  # minor units of `currency`
    currency: str
    status: str  # the gateway's own word: succeeded, pending, processed, failed, ...


@dataclass
class CheckoutRequest:
    """A checkout at the gateway for one order's total (Stripe PaymentIntent, Razorpay order)."""

    order_id: str
    amount: int  # minor units of `currency`
    currency: str
    customer: str = ""  # the gateway's customer id, if the order service keeps one
    payment_method: str = ""  # confirm at once with this saved method (server-side checkout)
    capture_manually: bool = False  # authorise now, capture later through the gateway


@dataclass
class Checkout:
    """What the storefront needs to finish the payment."""

    provider: str
    payment_id: str  # PaymentIntent id / Razorpay order id
    status: str
    client_secret: str = ""  # Stripe: what Stripe.js confirms the PaymentIntent with
    amount: int = 0
    currency: str = ""
    detail: str = ""  # e.g. the decline message when a saved card was confirmed at once
