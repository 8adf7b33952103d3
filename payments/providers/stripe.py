"""Stripe: webhooks signed in `Stripe-Signature` (HMAC-SHA256 over `timestamp.body`, a tolerance
window), events whose object carries our order id in `metadata.order_id`; the API on the
official SDK (payments/stripe_gateway.py), keys `sk_…`/`rk_…`."""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from orderflow.contracts.payment import GATEWAY_SETTINGS, GatewayName
from orderflow.settings import Settings
from payments.events import (
    MONEY_KINDS,
    REASON_CHARS,
    STRIPE_RETRY_METADATA,
    EventKind,
    GatewayEvent,
    MalformedEventError,
    as_obj,
    as_str,
    check_money,
    first_field,
    load_event,
    risky,
)
from payments.providers.base import Headers, WebhookProvider, register
from payments.samples import dump_event, new_id
from payments.signatures import SignatureError, as_bytes, hmac_hex

if TYPE_CHECKING:
    from payments.gateway import PaymentGateway

# secret, restricted and publishable keys, should an error message ever echo one
KEY_PATTERNS = (r"\b(?:sk|rk|pk)_(?:live|test)_\w+",)

STRIPE_SIGNATURE_HEADER = "Stripe-Signature"
STRIPE_SCHEME = "v1"  # the only scheme Stripe signs live events with; v0 is test-only and ignored
DEFAULT_TOLERANCE_SECONDS = 300  # Stripe's own default window against replays

# --- signatures ---


def stripe_signature(payload: bytes | str, secret: str, timestamp: int) -> str:
    """The v1 signature: hex HMAC-SHA256 of `{timestamp}.{payload}` keyed by the endpoint secret."""
    return hmac_hex(secret, f"{timestamp}.".encode() + as_bytes(payload))


def sign_stripe(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value (`t=…,v1=…`) for the payload, signed now by default."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},{STRIPE_SCHEME}={stripe_signature(payload, secret, t)}"


def parse_stripe_header(header: str) -> tuple[int, list[str]]:
    """The timestamp and every v1 signature in a `Stripe-Signature` header."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("stripe", f"timestamp {value!r} is not an integer") from None
        elif key == STRIPE_SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("stripe", "no timestamp (t=) in the Stripe-Signature header")
    if not signatures:
        raise SignatureError("stripe", "no v1 signature in the Stripe-Signature header")
    return timestamp, signatures


def verify_stripe(
    payload: bytes | str,
    header: str | None,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a `Stripe-Signature` header against the raw body; returns its timestamp.

    Any one of several v1 signatures may match (Stripe sends one per secret while a secret rolls).
    A timestamp further than `tolerance` seconds from now, past or future, is refused as a replay.
    """
    if not tolerance > 0:  # 0 once meant "no check": a captured request could be replayed forever
        raise ValueError(f"the Stripe tolerance must be positive, not {tolerance!r}")
    if not header:
        raise SignatureError("stripe", "the Stripe-Signature header is missing")
    if not secret:
        raise SignatureError("stripe", "no Stripe webhook secret is configured")
    timestamp, signatures = parse_stripe_header(header)
    expected = stripe_signature(payload, secret, timestamp)
    # compare against all of them, so timing says nothing about which one matched
    matched = [hmac.compare_digest(expected.encode(), s.encode()) for s in signatures]
    if not any(matched):
        raise SignatureError("stripe", "no v1 signature matches the body and the endpoint secret")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise SignatureError(
            "stripe",
            f"timestamp {timestamp} is {age:.0f}s from now, outside the {tolerance:.0f}s tolerance",
        )
    return timestamp


# --- events ---

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
# Stripe events whose object is a Refund: a failed or cancelled one gave nothing back
STRIPE_REFUND_EVENTS = ("refund.failed", "refund.updated", "charge.refund.updated")
STRIPE_REFUND_ENDED = ("failed", "canceled")


def parse_stripe(body: bytes) -> GatewayEvent:
    """A Stripe event (`id`, `type`, `data.object`) reduced; order id from the object's metadata."""
    event = load_event("stripe", body)
    event_id, etype = as_str(event.get("id")), as_str(event.get("type"))
    if not event_id:
        raise MalformedEventError("stripe", "", "no event id")
    if not etype:
        raise MalformedEventError("stripe", event_id, "no event type")
    kind = STRIPE_KINDS.get(etype, EventKind.IGNORED)
    obj = as_obj(as_obj(event.get("data")).get("object"))
    if etype in STRIPE_REFUND_EVENTS:
        return _stripe_refund_event(event_id, etype, obj)
    if etype == "charge.succeeded" and obj.get("captured") is False:
        kind = EventKind.PAYMENT_AUTHORISED  # authorised, not taken: amount_captured is 0
    if kind is not EventKind.REFUND and STRIPE_RETRY_METADATA in as_obj(obj.get("metadata")):
        kind = EventKind.IGNORED
    parsed = GatewayEvent(
        provider="stripe",
        event_id=event_id,
        type=etype,
        kind=kind.value,
        order_id=as_str(as_obj(obj.get("metadata")).get("order_id")),
        currency=as_str(obj.get("currency")).upper(),
    )
    amount: tuple[Any, str] = (None, "data.object.amount")
    if etype.startswith("payment_intent."):
        parsed.payment_id = as_str(obj.get("id"))
        amount = first_field(obj, "data.object", "amount_received", "amount")
        if kind is EventKind.PAYMENT_AUTHORISED:
            amount = first_field(obj, "data.object", "amount_capturable", "amount")
        error = as_obj(obj.get("last_payment_error"))
        parsed.reason = as_str(error.get("message"))[:REASON_CHARS]
        charge = error.get("charge") or obj.get("latest_charge")
        parsed.attempt_id = as_str(as_obj(charge).get("id") if isinstance(charge, dict) else charge)
        if kind in (EventKind.PAYMENT_RECEIVED, EventKind.PAYMENT_AUTHORISED):
            _read_risk(parsed, obj.get("latest_charge"))
    elif etype.startswith("charge."):
        # a charge belongs to a PaymentIntent: one payment id for charge.* and payment_intent.*
        parsed.payment_id = as_str(obj.get("payment_intent")) or as_str(obj.get("id"))
        amount = first_field(obj, "data.object", "amount_captured", "amount")
        if kind is EventKind.PAYMENT_AUTHORISED:
            amount = first_field(obj, "data.object", "amount")
        parsed.reason = as_str(obj.get("failure_message"))[:REASON_CHARS]
        parsed.attempt_id = as_str(obj.get("id"))
        parsed.flagged = risky(as_obj(obj.get("outcome")).get("risk_level"))
    if kind is EventKind.REFUND:
        refunds = as_obj(obj.get("refunds")).get("data")
        latest = as_obj(refunds[0]) if isinstance(refunds, list) and refunds else {}
        refunded = obj.get("amount_refunded")
        parsed.refund_id = (
            as_str(latest.get("id")) or f"{as_str(obj.get('id'))}-refunded-{refunded}"
        )
        amount = (
            first_field(latest, "data.object.refunds.data[0]", "amount")
            if "amount" in latest
            else first_field(obj, "data.object", "amount_refunded")
        )
        parsed.refund_cumulative = not latest
        parsed.refunded_total = refunded
        parsed.refunds_listed = [
            {
                "id": as_str(r.get("id")),
                "amount": r.get("amount"),
                "status": as_str(r.get("status")),
            }
            for r in (map(as_obj, refunds) if isinstance(refunds, list) else ())
            if as_str(r.get("id"))
        ]
    parsed.amount_minor = amount[0]
    if kind in MONEY_KINDS:
        check_money("stripe", event_id, amount, (obj.get("currency"), "data.object.currency"))
    return parsed


def _read_risk(parsed: GatewayEvent, charge: Any) -> None:
    """The risk of a PaymentIntent's latest charge: from its outcome when the event expanded it
    with one, else the worker asks Stripe for the charge (`risk_charge`) before the order hears."""
    if isinstance(charge, dict) and isinstance(charge.get("outcome"), dict):
        parsed.flagged = risky(charge["outcome"].get("risk_level"))
    elif isinstance(charge, dict | str):
        parsed.risk_charge = as_str(
            as_obj(charge).get("id") if isinstance(charge, dict) else charge
        )


def _stripe_refund_event(event_id: str, etype: str, refund: dict[str, Any]) -> GatewayEvent:
    """An event about one Refund: REFUND_FAILED once it failed or was cancelled, else IGNORED."""
    status = as_str(refund.get("status"))
    ended = etype == "refund.failed" or status in STRIPE_REFUND_ENDED
    charge = refund.get("charge")
    charge_id = as_str(as_obj(charge).get("id") if isinstance(charge, dict) else charge)
    reason = as_str(refund.get("failure_reason")) or f"refund is {status or 'failed'}"
    if ended:
        amount = first_field(refund, "data.object", "amount")
        check_money("stripe", event_id, amount, (refund.get("currency"), "data.object.currency"))
    return GatewayEvent(
        provider="stripe",
        event_id=event_id,
        type=etype,
        kind=(EventKind.REFUND_FAILED if ended else EventKind.IGNORED).value,
        order_id=as_str(as_obj(refund.get("metadata")).get("order_id")),
        payment_id=as_str(refund.get("payment_intent")) or charge_id,
        amount_minor=refund.get("amount"),
        currency=as_str(refund.get("currency")).upper(),
        reason=reason[:REASON_CHARS],
        refund_id=as_str(refund.get("id")),
    )


# --- samples ---


def stripe_event(
    event_type: str, obj: dict[str, Any], *, event_id: str = "", created: int | None = None
) -> dict[str, Any]:
    """A Stripe event envelope around `obj` (`data.object`)."""
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "type": event_type,
        "data": {"object": obj},
    }


def stripe_payment_intent(
    order_id: str,
    amount_minor: int,
    *,
    currency: str = "inr",
    status: str = "succeeded",
    payment_intent_id: str = "",
    failure: str = "",
) -> dict[str, Any]:
    """A PaymentIntent carrying the order id in its metadata."""
    return {
        "id": payment_intent_id or new_id("pi"),
        "object": "payment_intent",
        "amount": amount_minor,
        "amount_received": amount_minor if status == "succeeded" else 0,
        "currency": currency,
        "status": status,
        "metadata": {"order_id": order_id},
        "last_payment_error": {"message": failure} if failure else None,
    }


def stripe_payment_succeeded(
    order_id: str, amount_minor: int, *, event_id: str = "", payment_intent_id: str = ""
) -> bytes:
    """`payment_intent.succeeded` as Stripe posts it."""
    pi = stripe_payment_intent(order_id, amount_minor, payment_intent_id=payment_intent_id)
    return dump_event(stripe_event("payment_intent.succeeded", pi, event_id=event_id))


def stripe_payment_failed(
    order_id: str, amount_minor: int, *, event_id: str = "", payment_intent_id: str = ""
) -> bytes:
    """`payment_intent.payment_failed` with a card decline."""
    pi = stripe_payment_intent(
        order_id,
        amount_minor,
        status="requires_payment_method",
        payment_intent_id=payment_intent_id,
        failure="Your card was declined.",
    )
    return dump_event(stripe_event("payment_intent.payment_failed", pi, event_id=event_id))


def stripe_charge_refunded(
    payment_intent_id: str, amount_minor: int, *, event_id: str = "", order_id: str = ""
) -> bytes:
    """`charge.refunded` for the PaymentIntent's charge (metadata only if `order_id`)."""
    charge = {
        "id": new_id("ch"),
        "object": "charge",
        "amount": amount_minor,
        "amount_captured": amount_minor,
        "amount_refunded": amount_minor,
        "currency": "inr",
        "payment_intent": payment_intent_id,
        "refunded": True,
        "metadata": {"order_id": order_id} if order_id else {},
        "refunds": {"object": "list", "data": [{"id": new_id("re"), "amount": amount_minor}]},
    }
    return dump_event(stripe_event("charge.refunded", charge, event_id=event_id))


# --- the provider ---


def verify(body: bytes, headers: Headers, settings: Settings) -> None:
    """The `Stripe-Signature` header against the body, the secret and the tolerance."""
    verify_stripe(
        body,
        headers.get(STRIPE_SIGNATURE_HEADER),
        settings.stripe_webhook_secret,
        tolerance=settings.webhook_tolerance_seconds,
    )


def sign(
    payload: bytes, settings: Settings, timestamp: int | None, event_id: str | None
) -> dict[str, str]:
    """The headers Stripe sends (the event id is in the body)."""
    header = sign_stripe(payload, settings.stripe_webhook_secret, timestamp)
    return {"Content-Type": "application/json", STRIPE_SIGNATURE_HEADER: header}


def gateway(settings: Settings) -> PaymentGateway:
    """Stripe's API on the secret key, at `stripe_api_base` (localstripe in the tests)."""
    from payments.stripe_gateway import StripeGateway  # the SDK loads only where it is used

    return StripeGateway(
        settings.stripe_api_key,
        api_base=settings.stripe_api_base,
        timeout=settings.gateway_timeout_seconds,
    )


STRIPE = register(
    WebhookProvider(
        name=GatewayName.STRIPE.value,
        title="Stripe",
        signature_header=STRIPE_SIGNATURE_HEADER,
        verify=verify,
        sign=sign,
        parse=lambda body, headers: parse_stripe(body),
        kinds=STRIPE_KINDS,
        order_id_field="data.object.metadata",
        samples={"paid": stripe_payment_succeeded, "failed": stripe_payment_failed},
        gateway=gateway,
        key_patterns=KEY_PATTERNS,
        settings=GATEWAY_SETTINGS[GatewayName.STRIPE],
    )
)
