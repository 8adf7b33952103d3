"""Gateway webhook events, reduced to the few fields an order needs (the job's data).

What every provider's parser shares: the event type, its checks of money, and helpers to read
JSON safely. Each provider's own parser is in its module (payments/providers/<name>.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from orderflow.errors import OrderflowError
from orderflow.money import MINOR_LIMIT, MoneyError, exponent


class EventKind(StrEnum):
    """What a gateway event means for an order; IGNORED events are answered 2xx and not enqueued."""

    PAYMENT_RECEIVED = "payment_received"
    PAYMENT_AUTHORISED = "payment_authorised"  # manual capture: held, the order captures it
    PAYMENT_FAILED = "payment_failed"
    REFUND = "refund"
    REFUND_FAILED = "refund_failed"  # a refund the gateway accepted ended without paying out
    IGNORED = "ignored"


# metadata key on a PaymentIntent the capture retries made themselves (payments/stripe_gateway.py):
# the retry workflow already has its outcome from the API, so its webhooks are not news. Here
# rather than in payments/providers/stripe.py: that gateway writes it, the Stripe parser reads it
STRIPE_RETRY_METADATA = "orderflow_retry_attempt"
REASON_CHARS = 500  # a decline message is a sentence; keep job data small whatever is sent
ID_SHOWN = 120  # characters of an event id shown in an error (ids are short; a long one is junk)
# kinds that move money: their amount and currency must be ones a gateway can have moved
MONEY_KINDS = (
    EventKind.PAYMENT_RECEIVED,
    EventKind.PAYMENT_AUTHORISED,
    EventKind.REFUND,
    EventKind.REFUND_FAILED,
)
VALUE_SHOWN = 40  # characters of a refused amount or currency shown in an error
# Radar's charge.outcome.risk_level values worth a look: read by the Stripe parser and by the
# webhook processor's risk check of a charge it fetched (payments/processor.py)
RISKY_STRIPE_LEVELS = ("elevated", "highest")


class MalformedEventError(OrderflowError):
    """A webhook body (with a valid signature) is not an event we can read."""

    def __init__(self, provider: str, event_id: str, reason: str) -> None:
        shown = event_id[:ID_SHOWN] if event_id.isprintable() else repr(event_id[:ID_SHOWN])
        super().__init__(f"malformed {provider} event {shown or '(no id)'}: {reason}")
        self.provider = provider
        self.event_id = event_id
        self.reason = reason


@dataclass
class GatewayEvent:
    """One webhook event as the webhook worker sees it; the amount stays in minor units as sent."""

    provider: str
    event_id: str
    type: str
    kind: str
    order_id: str = ""
    payment_id: str = ""
    # checked at parse (the ingress answers 400) and again by the worker, for job data that
    # came another way (a Node producer): see amount_problem
    amount_minor: Any = None
    currency: str = ""
    reason: str = ""
    refund_id: str = ""
    flagged: bool = False  # the gateway's own fraud signal: the order goes to manual review
    attempt_id: str = ""  # one try at the card (a Stripe charge); failures count per attempt
    # a refund given as the payment's running total (Stripe's amount_refunded, list not expanded)
    refund_cumulative: bool = False
    # every refund the event lists ({"id", "amount", "status"}: Stripe's charge.refunds) and the
    # running total then: each refund is recorded by its own id, once
    refunds_listed: list[dict[str, Any]] = field(default_factory=list)
    refunded_total: Any = None
    # a charge whose Radar risk the worker reads before the order hears of the payment (a Stripe
    # payment_intent.* event names its latest charge but carries no outcome of it)
    risk_charge: str = ""

    @property
    def job_id(self) -> str:
        """The queue's job id: a redelivered event gets the same one, so BullMQ keeps one job."""
        return f"{self.provider}-{self.event_id}"

    @property
    def job_name(self) -> str:
        """The job name on payment-webhook-queue: `<provider>-webhook` (payments.providers)."""
        return f"{self.provider}-webhook"

    def to_job(self) -> dict[str, Any]:
        """The job's data: every field, the listed refunds copied (what `asdict` gives, without
        its recursive walk over every value: this runs once per webhook on the ingress)."""
        data = {name: getattr(self, name) for name in _JOB_FIELDS}
        data["refunds_listed"] = [dict(refund) for refund in self.refunds_listed]
        return data

    @classmethod
    def from_job(cls, data: dict[str, Any]) -> GatewayEvent:
        """Read a job's data back, ignoring fields a newer producer may have added."""
        known = {f.name: f.type for f in fields(cls)}
        provider, event_id = str(data.get("provider", "?")), str(data.get("event_id", ""))
        for name, kind in known.items():
            value = data.get(name)
            wrong = (kind == "str" and not isinstance(value, str)) or (
                kind == "bool" and not isinstance(value, bool)
            )
            if name in data and wrong:
                raise MalformedEventError(
                    provider, event_id, f"job data: {name} {_shown(value)} is not a {kind}"
                )
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as err:
            raise MalformedEventError(provider, event_id, f"job data: {err}") from err


_JOB_FIELDS = tuple(f.name for f in fields(GatewayEvent))


def amount_problem(amount: Any) -> str:
    """Why `amount` cannot be an amount a gateway moved ("" if it can): whole minor units, 0 to
    2^63-1 (a signed 64-bit column; Stripe's largest amount has 8 digits)."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount < MINOR_LIMIT:
        return "not a whole number of minor units from 0 to 2^63-1"
    return ""


def currency_problem(currency: Any) -> str:
    """Why `currency` cannot be the currency of money moved ("" if it can)."""
    if currency == "" or currency is None:
        return "empty: an amount means nothing without its currency"
    if not isinstance(currency, str):
        return "not an ISO 4217 currency code"
    try:
        exponent(currency)
    except MoneyError:
        return "not an ISO 4217 currency code"
    return ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_SHOWN else f"{text[:VALUE_SHOWN]}..."


def check_money(
    provider: str, event_id: str, amount: tuple[Any, str], currency: tuple[Any, str]
) -> None:
    """Refuse an event whose (value, field path) amount or currency no payment can have."""
    (value, where), (code, code_where) = amount, currency
    if problem := amount_problem(value):
        raise MalformedEventError(provider, event_id, f"{where} {_shown(value)} is {problem}")
    if problem := currency_problem(code):
        shown = "" if code in ("", None) else f" {_shown(code)}"
        raise MalformedEventError(provider, event_id, f"{code_where}{shown} is {problem}")


def first_field(obj: dict[str, Any], where: str, *names: str) -> tuple[Any, str]:
    """The first of `names` that `obj` has (even if null), with its path; else None, the last."""
    for name in names:
        if name in obj:
            return obj[name], f"{where}.{name}"
    return None, f"{where}.{names[-1]}"


def load_event(provider: str, body: bytes, event_id: str = "") -> dict[str, Any]:
    """The body as a JSON object, or MalformedEventError naming the provider and event."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MalformedEventError(provider, event_id, f"body is not JSON ({err})") from None
    if not isinstance(event, dict):
        raise MalformedEventError(provider, event_id, "body is not a JSON object")
    return event


def as_obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else {}."""
    return value if isinstance(value, dict) else {}


def as_str(value: Any) -> str:
    """`value` if it is a string, else ""."""
    return value if isinstance(value, str) else ""


def risky(risk_level: Any) -> bool:
    """Whether Radar's `outcome.risk_level` of a charge asks for a manual review."""
    return risk_level in RISKY_STRIPE_LEVELS
