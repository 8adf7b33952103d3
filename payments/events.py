"""Stripe and Razorpay webhook events, reduced to the few fields an order needs (the job's data)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
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


# Stripe sends charge.failed beside payment_intent.payment_failed for one failure: only one counts.
# A manual-capture intent, once confirmed, is `requires_capture`: Stripe sends
# amount_capturable_updated (and charge.succeeded with captured=false, read as the same).
STRIPE_KINDS = {
    "payment_intent.succeeded": EventKind.PAYMENT_RECEIVED,
    "payment_intent.amount_capturable_updated": EventKind.PAYMENT_AUTHORISED,
    "charge.succeeded": EventKind.PAYMENT_RECEIVED,
    "payment_intent.payment_failed": EventKind.PAYMENT_FAILED,
    "charge.refunded": EventKind.REFUND,
}
RAZORPAY_KINDS = {
    "payment.captured": EventKind.PAYMENT_RECEIVED,
    # an order with payment_capture=0 stays `authorized` until captured (Razorpay sends this
    # before payment.captured for auto-captured orders too: the capture then finds it captured)
    "payment.authorized": EventKind.PAYMENT_AUTHORISED,
    "payment.failed": EventKind.PAYMENT_FAILED,
    "refund.processed": EventKind.REFUND,
    "refund.failed": EventKind.REFUND_FAILED,
}
# Stripe events whose object is a Refund: a failed or cancelled one gave nothing back
STRIPE_REFUND_EVENTS = ("refund.failed", "refund.updated", "charge.refund.updated")
STRIPE_REFUND_ENDED = ("failed", "canceled")
# metadata key on a PaymentIntent the capture retries made themselves (payments/stripe_gateway.py):
# the retry workflow already has its outcome from the API, so its webhooks are not news
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
RISKY_STRIPE_LEVELS = (
    "elevated",
    "highest",
)  # Radar's charge.outcome.risk_level values worth a look


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
        """The job's data."""
        return asdict(self)

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


def _check_money(
    provider: str, event_id: str, amount: tuple[Any, str], currency: tuple[Any, str]
) -> None:
    """Refuse an event whose (value, field path) amount or currency no payment can have."""
    (value, where), (code, code_where) = amount, currency
    if problem := amount_problem(value):
        raise MalformedEventError(provider, event_id, f"{where} {_shown(value)} is {problem}")
    if problem := currency_problem(code):
        shown = "" if code in ("", None) else f" {_shown(code)}"
        raise MalformedEventError(provider, event_id, f"{code_where}{shown} is {problem}")


def _first(obj: dict[str, Any], where: str, *names: str) -> tuple[Any, str]:
    """The first of `names` that `obj` has (even if null), with its path; else None, the last."""
    for name in names:
        if name in obj:
            return obj[name], f"{where}.{name}"
    return None, f"{where}.{names[-1]}"


def _load(provider: str, body: bytes, event_id: str = "") -> dict[str, Any]:
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MalformedEventError(provider, event_id, f"body is not JSON ({err})") from None
    if not isinstance(event, dict):
        raise MalformedEventError(provider, event_id, "body is not a JSON object")
    return event


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_stripe(body: bytes) -> GatewayEvent:
    """A Stripe event (`id`, `type`, `data.object`) reduced; order id from the object's metadata."""
    event = _load("stripe", body)
    event_id, etype = _str(event.get("id")), _str(event.get("type"))
    if not event_id:
        raise MalformedEventError("stripe", "", "no event id")
    if not etype:
        raise MalformedEventError("stripe", event_id, "no event type")
    kind = STRIPE_KINDS.get(etype, EventKind.IGNORED)
    obj = _obj(_obj(event.get("data")).get("object"))
    if etype in STRIPE_REFUND_EVENTS:
        return _stripe_refund_event(event_id, etype, obj)
    if etype == "charge.succeeded" and obj.get("captured") is False:
        kind = EventKind.PAYMENT_AUTHORISED  # authorised, not taken: amount_captured is 0
    if kind is not EventKind.REFUND and STRIPE_RETRY_METADATA in _obj(obj.get("metadata")):
        kind = EventKind.IGNORED
    parsed = GatewayEvent(
        provider="stripe",
        event_id=event_id,
        type=etype,
        kind=kind.value,
        order_id=_str(_obj(obj.get("metadata")).get("order_id")),
        currency=_str(obj.get("currency")).upper(),
    )
    amount: tuple[Any, str] = (None, "data.object.amount")
    if etype.startswith("payment_intent."):
        parsed.payment_id = _str(obj.get("id"))
        amount = _first(obj, "data.object", "amount_received", "amount")
        if kind is EventKind.PAYMENT_AUTHORISED:
            amount = _first(obj, "data.object", "amount_capturable", "amount")
        error = _obj(obj.get("last_payment_error"))
        parsed.reason = _str(error.get("message"))[:REASON_CHARS]
        charge = error.get("charge") or obj.get("latest_charge")
        parsed.attempt_id = _str(_obj(charge).get("id") if isinstance(charge, dict) else charge)
        if kind in (EventKind.PAYMENT_RECEIVED, EventKind.PAYMENT_AUTHORISED):
            _read_risk(parsed, obj.get("latest_charge"))
    elif etype.startswith("charge."):
        # a charge belongs to a PaymentIntent: one payment id for charge.* and payment_intent.*
        parsed.payment_id = _str(obj.get("payment_intent")) or _str(obj.get("id"))
        amount = _first(obj, "data.object", "amount_captured", "amount")
        if kind is EventKind.PAYMENT_AUTHORISED:
            amount = _first(obj, "data.object", "amount")
        parsed.reason = _str(obj.get("failure_message"))[:REASON_CHARS]
        parsed.attempt_id = _str(obj.get("id"))
        parsed.flagged = risky(_obj(obj.get("outcome")).get("risk_level"))
    if kind is EventKind.REFUND:
        refunds = _obj(obj.get("refunds")).get("data")
        latest = _obj(refunds[0]) if isinstance(refunds, list) and refunds else {}
        refunded = obj.get("amount_refunded")
        parsed.refund_id = _str(latest.get("id")) or f"{_str(obj.get('id'))}-refunded-{refunded}"
        amount = (
            _first(latest, "data.object.refunds.data[0]", "amount")
            if "amount" in latest
            else _first(obj, "data.object", "amount_refunded")
        )
        parsed.refund_cumulative = not latest
        parsed.refunded_total = refunded
        parsed.refunds_listed = [
            {"id": _str(r.get("id")), "amount": r.get("amount"), "status": _str(r.get("status"))}
            for r in (map(_obj, refunds) if isinstance(refunds, list) else ())
            if _str(r.get("id"))
        ]
    parsed.amount_minor = amount[0]
    if kind in MONEY_KINDS:
        _check_money("stripe", event_id, amount, (obj.get("currency"), "data.object.currency"))
    return parsed


def risky(risk_level: Any) -> bool:
    """Whether Radar's `outcome.risk_level` of a charge asks for a manual review."""
    return risk_level in RISKY_STRIPE_LEVELS


def _read_risk(parsed: GatewayEvent, charge: Any) -> None:
    """The risk of a PaymentIntent's latest charge: from its outcome when the event expanded it
    with one, else the worker asks Stripe for the charge (`risk_charge`) before the order hears."""
    if isinstance(charge, dict) and isinstance(charge.get("outcome"), dict):
        parsed.flagged = risky(charge["outcome"].get("risk_level"))
    elif isinstance(charge, dict | str):
        parsed.risk_charge = _str(_obj(charge).get("id") if isinstance(charge, dict) else charge)


def _stripe_refund_event(event_id: str, etype: str, refund: dict[str, Any]) -> GatewayEvent:
    """An event about one Refund: REFUND_FAILED once it failed or was cancelled, else IGNORED."""
    status = _str(refund.get("status"))
    ended = etype == "refund.failed" or status in STRIPE_REFUND_ENDED
    charge = refund.get("charge")
    charge_id = _str(_obj(charge).get("id") if isinstance(charge, dict) else charge)
    reason = _str(refund.get("failure_reason")) or f"refund is {status or 'failed'}"
    if ended:
        amount = _first(refund, "data.object", "amount")
        _check_money("stripe", event_id, amount, (refund.get("currency"), "data.object.currency"))
    return GatewayEvent(
        provider="stripe",
        event_id=event_id,
        type=etype,
        kind=(EventKind.REFUND_FAILED if ended else EventKind.IGNORED).value,
        order_id=_str(_obj(refund.get("metadata")).get("order_id")),
        payment_id=_str(refund.get("payment_intent")) or charge_id,
        amount_minor=refund.get("amount"),
        currency=_str(refund.get("currency")).upper(),
        reason=reason[:REASON_CHARS],
        refund_id=_str(refund.get("id")),
    )


def razorpay_event_id(body: bytes, header: str | None) -> str:
    """The `X-Razorpay-Event-Id` header, or a hash of the body when a sender leaves it out."""
    return (
        header.strip()
        if header and header.strip()
        else f"body-{hashlib.sha256(body).hexdigest()[:40]}"
    )


def parse_razorpay(body: bytes, event_id_header: str | None = None) -> GatewayEvent:
    """A Razorpay event (`event`, `payload.payment.entity` / `payload.refund.entity`) reduced."""
    event_id = razorpay_event_id(body, event_id_header)
    event = _load("razorpay", body, event_id)
    etype = _str(event.get("event"))
    if not etype:
        raise MalformedEventError("razorpay", event_id, "no event name (`event`)")
    kind = RAZORPAY_KINDS.get(etype, EventKind.IGNORED)
    payload = _obj(event.get("payload"))
    payment = _obj(_obj(payload.get("payment")).get("entity"))
    refund = _obj(_obj(payload.get("refund")).get("entity"))
    entity = refund if kind in (EventKind.REFUND, EventKind.REFUND_FAILED) else payment
    order_id = _str(_obj(entity.get("notes")).get("order_id")) or _str(
        _obj(payment.get("notes")).get("order_id")
    )
    if kind in MONEY_KINDS:
        where = f"payload.{'payment' if entity is payment else 'refund'}.entity"
        _check_money(
            "razorpay",
            event_id,
            (entity.get("amount"), f"{where}.amount"),
            (entity.get("currency"), f"{where}.currency"),
        )
    return GatewayEvent(
        provider="razorpay",
        event_id=event_id,
        type=etype,
        kind=kind.value,
        order_id=order_id,
        payment_id=_str(refund.get("payment_id")) if refund else _str(payment.get("id")),
        amount_minor=entity.get("amount"),
        currency=_str(entity.get("currency")).upper(),
        reason=(
            f"refund {_str(refund.get('id'))} is {_str(refund.get('status')) or 'failed'}"
            if kind is EventKind.REFUND_FAILED
            else _str(payment.get("error_description"))[:REASON_CHARS]
        ),
        refund_id=_str(refund.get("id")),
        attempt_id=_str(payment.get("id")),  # Razorpay makes a new payment per attempt
    )
