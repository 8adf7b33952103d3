"""Razorpay: webhooks signed in `X-Razorpay-Signature` (hex HMAC-SHA256 of the body), the event
id in `X-Razorpay-Event-Id`, our order id in the payment's `notes.order_id`; the API on the
official SDK (payments/razorpay_gateway.py), key ids `rzp_…`."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any

from orderflow.contracts.payment import GATEWAY_SETTINGS, GatewayName
from orderflow.settings import Settings
from payments.events import (
    MONEY_KINDS,
    REASON_CHARS,
    EventKind,
    GatewayEvent,
    MalformedEventError,
    as_obj,
    as_str,
    check_money,
    load_event,
)
from payments.providers.base import Headers, WebhookProvider, register
from payments.samples import dump_event, new_id
from payments.signatures import SignatureError, as_bytes, hmac_hex

if TYPE_CHECKING:
    from payments.gateway import PaymentGateway

# key ids, should an error message ever echo one (the key secret has no prefix to find)
KEY_PATTERNS = (r"\brzp_(?:live|test)_\w+",)

RAZORPAY_SIGNATURE_HEADER = "X-Razorpay-Signature"
RAZORPAY_EVENT_ID_HEADER = "X-Razorpay-Event-Id"

# --- signatures ---


def sign_razorpay(payload: bytes | str, secret: str) -> str:
    """An `X-Razorpay-Signature` header value: hex HMAC-SHA256 of the raw body."""
    return hmac_hex(secret, as_bytes(payload))


def verify_razorpay(payload: bytes | str, header: str | None, secret: str) -> None:
    """Check an `X-Razorpay-Signature` header against the raw body."""
    if not header:
        raise SignatureError("razorpay", "the X-Razorpay-Signature header is missing")
    if not secret:
        raise SignatureError("razorpay", "no Razorpay webhook secret is configured")
    if not hmac.compare_digest(sign_razorpay(payload, secret).encode(), header.strip().encode()):
        raise SignatureError(
            "razorpay", "the signature does not match the body and the webhook secret"
        )


# --- events ---

RAZORPAY_KINDS = {
    "payment.captured": EventKind.PAYMENT_RECEIVED,
    # an order with payment_capture=0 stays `authorized` until captured (Razorpay sends this
    # before payment.captured for auto-captured orders too: the capture then finds it captured)
    "payment.authorized": EventKind.PAYMENT_AUTHORISED,
    "payment.failed": EventKind.PAYMENT_FAILED,
    "refund.processed": EventKind.REFUND,
    "refund.failed": EventKind.REFUND_FAILED,
}


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
    event = load_event("razorpay", body, event_id)
    etype = as_str(event.get("event"))
    if not etype:
        raise MalformedEventError("razorpay", event_id, "no event name (`event`)")
    kind = RAZORPAY_KINDS.get(etype, EventKind.IGNORED)
    payload = as_obj(event.get("payload"))
    payment = as_obj(as_obj(payload.get("payment")).get("entity"))
    refund = as_obj(as_obj(payload.get("refund")).get("entity"))
    entity = refund if kind in (EventKind.REFUND, EventKind.REFUND_FAILED) else payment
    order_id = as_str(as_obj(entity.get("notes")).get("order_id")) or as_str(
        as_obj(payment.get("notes")).get("order_id")
    )
    if kind in MONEY_KINDS:
        where = f"payload.{'payment' if entity is payment else 'refund'}.entity"
        check_money(
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
        payment_id=as_str(refund.get("payment_id")) if refund else as_str(payment.get("id")),
        amount_minor=entity.get("amount"),
        currency=as_str(entity.get("currency")).upper(),
        reason=(
            f"refund {as_str(refund.get('id'))} is {as_str(refund.get('status')) or 'failed'}"
            if kind is EventKind.REFUND_FAILED
            else as_str(payment.get("error_description"))[:REASON_CHARS]
        ),
        refund_id=as_str(refund.get("id")),
        attempt_id=as_str(payment.get("id")),  # Razorpay makes a new payment per attempt
    )


# --- samples ---


def razorpay_event(event: str, entities: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A Razorpay webhook envelope: `{"event": ..., "payload": {name: {"entity": ...}}}`."""
    return {
        "entity": "event",
        "account_id": "acc_orderflow",
        "event": event,
        "contains": list(entities),
        "payload": {name: {"entity": entity} for name, entity in entities.items()},
        "created_at": int(time.time()),
    }


def razorpay_payment(
    order_id: str, amount_minor: int, *, payment_id: str = "", status: str = "captured"
) -> dict[str, Any]:
    """A Razorpay payment entity carrying the order id in its notes."""
    failed = status == "failed"
    return {
        "id": payment_id or new_id("pay"),
        "entity": "payment",
        "amount": amount_minor,
        "currency": "INR",
        "status": status,
        "order_id": new_id("order"),
        "method": "upi",
        "captured": not failed,
        "notes": {"order_id": order_id},
        "error_code": "BAD_REQUEST_ERROR" if failed else None,
        "error_description": "Payment was declined by the bank" if failed else None,
    }


def razorpay_payment_captured(order_id: str, amount_minor: int, *, payment_id: str = "") -> bytes:
    """`payment.captured` as Razorpay posts it."""
    payment = razorpay_payment(order_id, amount_minor, payment_id=payment_id)
    return dump_event(razorpay_event("payment.captured", {"payment": payment}))


def razorpay_payment_failed(order_id: str, amount_minor: int, *, payment_id: str = "") -> bytes:
    """`payment.failed` with a bank decline."""
    payment = razorpay_payment(order_id, amount_minor, payment_id=payment_id, status="failed")
    return dump_event(razorpay_event("payment.failed", {"payment": payment}))


def razorpay_refund_processed(payment_id: str, amount_minor: int, *, order_id: str = "") -> bytes:
    """`refund.processed` for a payment (notes carry the order id only if given)."""
    refund = {
        "id": new_id("rfnd"),
        "entity": "refund",
        "amount": amount_minor,
        "currency": "INR",
        "payment_id": payment_id,
        "notes": {"order_id": order_id} if order_id else {},
        "status": "processed",
    }
    return dump_event(razorpay_event("refund.processed", {"refund": refund}))


# --- the provider ---


def verify(body: bytes, headers: Headers, settings: Settings) -> None:
    """The `X-Razorpay-Signature` header against the body and the secret."""
    verify_razorpay(body, headers.get(RAZORPAY_SIGNATURE_HEADER), settings.razorpay_webhook_secret)


def sign(
    payload: bytes, settings: Settings, timestamp: int | None, event_id: str | None
) -> dict[str, str]:
    """The headers Razorpay sends: the signature, and the event id when there is one."""
    headers = {
        "Content-Type": "application/json",
        RAZORPAY_SIGNATURE_HEADER: sign_razorpay(payload, settings.razorpay_webhook_secret),
    }
    if event_id:
        headers[RAZORPAY_EVENT_ID_HEADER] = event_id
    return headers


def gateway(settings: Settings) -> PaymentGateway:
    """Razorpay's API on the key id and secret, at `razorpay_api_base` (a fake in the tests)."""
    from payments.razorpay_gateway import RazorpayGateway  # the SDK loads only where it is used

    return RazorpayGateway(
        settings.razorpay_key_id,
        settings.razorpay_key_secret,
        api_base=settings.razorpay_api_base,
        timeout=settings.gateway_timeout_seconds,
    )


RAZORPAY = register(
    WebhookProvider(
        name=GatewayName.RAZORPAY.value,
        title="Razorpay",
        signature_header=RAZORPAY_SIGNATURE_HEADER,
        verify=verify,
        sign=sign,
        parse=lambda body, headers: parse_razorpay(body, headers.get(RAZORPAY_EVENT_ID_HEADER)),
        kinds=RAZORPAY_KINDS,
        order_id_field="payload.payment.notes",
        samples={"paid": razorpay_payment_captured, "failed": razorpay_payment_failed},
        gateway=gateway,
        key_patterns=KEY_PATTERNS,
        settings=GATEWAY_SETTINGS[GatewayName.RAZORPAY],
    )
)
