"""Webhook bodies shaped like Stripe's and Razorpay's, for the CLI, README, tests and benchmarks."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any


def _new(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def stripe_event(
    event_type: str, obj: dict[str, Any], *, event_id: str = "", created: int | None = None
) -> dict[str, Any]:
    """A Stripe event envelope around `obj` (`data.object`)."""
    return {
        "id": event_id or _new("evt"),
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
        "id": payment_intent_id or _new("pi"),
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
    return _dump(stripe_event("payment_intent.succeeded", pi, event_id=event_id))


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
    return _dump(stripe_event("payment_intent.payment_failed", pi, event_id=event_id))


def stripe_charge_refunded(
    payment_intent_id: str, amount_minor: int, *, event_id: str = "", order_id: str = ""
) -> bytes:
    """`charge.refunded` for the PaymentIntent's charge (metadata only if `order_id`)."""
    charge = {
        "id": _new("ch"),
        "object": "charge",
        "amount": amount_minor,
        "amount_captured": amount_minor,
        "amount_refunded": amount_minor,
        "currency": "inr",
        "payment_intent": payment_intent_id,
        "refunded": True,
        "metadata": {"order_id": order_id} if order_id else {},
        "refunds": {"object": "list", "data": [{"id": _new("re"), "amount": amount_minor}]},
    }
    return _dump(stripe_event("charge.refunded", charge, event_id=event_id))


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
        "id": payment_id or _new("pay"),
        "entity": "payment",
        "amount": amount_minor,
        "currency": "INR",
        "status": status,
        "order_id": _new("order"),
        "method": "upi",
        "captured": not failed,
        "notes": {"order_id": order_id},
        "error_code": "BAD_REQUEST_ERROR" if failed else None,
        "error_description": "Payment was declined by the bank" if failed else None,
    }


def razorpay_payment_captured(order_id: str, amount_minor: int, *, payment_id: str = "") -> bytes:
    """`payment.captured` as Razorpay posts it."""
    payment = razorpay_payment(order_id, amount_minor, payment_id=payment_id)
    return _dump(razorpay_event("payment.captured", {"payment": payment}))


def razorpay_payment_failed(order_id: str, amount_minor: int, *, payment_id: str = "") -> bytes:
    """`payment.failed` with a bank decline."""
    payment = razorpay_payment(order_id, amount_minor, payment_id=payment_id, status="failed")
    return _dump(razorpay_event("payment.failed", {"payment": payment}))


def razorpay_refund_processed(payment_id: str, amount_minor: int, *, order_id: str = "") -> bytes:
    """`refund.processed` for a payment (notes carry the order id only if given)."""
    refund = {
        "id": _new("rfnd"),
        "entity": "refund",
        "amount": amount_minor,
        "currency": "INR",
        "payment_id": payment_id,
        "notes": {"order_id": order_id} if order_id else {},
        "status": "processed",
    }
    return _dump(razorpay_event("refund.processed", {"refund": refund}))


def _dump(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()
