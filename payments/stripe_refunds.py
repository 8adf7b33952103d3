"""Stripe's refunds: one per attempt (an earlier attempt's found first), and a payment's list."""

from __future__ import annotations

from typing import Any

import stripe

from orderflow.contracts.payment import GatewayRefund, GatewayRequest, GatewayResponse
from payments.stripe_errors import declined
from payments.stripe_objects import (
    CHARGE_PREFIX,
    NAME,
    PAGE,
    charge_of,
    field,
    intent_of,
    unknown,
)

REFUND_GONE = ("failed", "canceled")  # a refund in these states gave nothing back
# a refund in these states is neither done nor declined: waiting on the bank or on the customer
REFUND_UNDER_WAY = ("pending", "requires_action")


def refund(client: stripe.StripeClient, request: GatewayRequest) -> GatewayResponse:
    """Refund `request.payment_id`: a PaymentIntent (else the order's newest) or a bare charge.

    Args:
        client: the gateway's Stripe client.
        request: the order, the amount and the attempt's idempotency key.

    Returns:
        Succeeded once the refund is done or under way (Stripe reports its end by webhook);
        a decline when nothing is known to refund or Stripe ended the refund unpaid.

    Raises:
        stripe.StripeError: Stripe's errors, for the caller to map (payments/stripe_errors.py).
    """
    # a legacy Charges API payment (`ch_…`, no PaymentIntent) is refunded by its charge
    paid: dict[str, str] = {}
    if request.payment_id.startswith(CHARGE_PREFIX):
        charge = charge_of(client, request.payment_id)
        if charge is not None:
            paid = {"charge": charge.id}
    elif (intent := intent_of(client, request)) is not None:
        paid = {"payment_intent": intent.id}
    if not paid:
        return declined(unknown(request))
    made = _earlier_refund(client, paid, request) or client.v1.refunds.create(
        params={
            **paid,
            "amount": request.amount,
            "metadata": {"order_id": request.order_id},
        },  # type: ignore[arg-type]
        options={"idempotency_key": request.idempotency_key},
    )
    [of] = paid.values()
    if made.status == "succeeded":
        return GatewayResponse(
            succeeded=True,
            payment_id=made.id,
            detail=f"refunded {of} (succeeded)",
            provider=NAME,
        )
    if made.status in REFUND_UNDER_WAY:
        # not a decline: money may still move, and a new attempt would start a second
        # refund. Stripe ends it by itself; its refund.failed (or charge.refund.updated)
        # comes as a webhook and puts the order to REFUND_FAILED (payments/refund_events.py)
        return GatewayResponse(
            succeeded=True,
            payment_id=made.id,
            detail=f"refund of {of} under way ({made.status}): Stripe reports its end",
            provider=NAME,
        )
    return declined(f"refund {made.id} of {of} is {made.status}")


def _earlier_refund(
    client: stripe.StripeClient, paid: dict[str, str], request: GatewayRequest
) -> Any:
    """A refund of this payment an earlier attempt made for the order, else None.

    Each attempt has its own idempotency key: an attempt whose every answer was lost
    refunded all the same, and the next one must find that refund, not pay again. One
    that failed or was cancelled moved no money and does not count.
    """
    found = client.v1.refunds.list(params={**paid, "limit": PAGE})  # type: ignore[arg-type]
    for made in found.data:
        if (
            field(field(made, "metadata", {}), "order_id") == request.order_id
            and int(field(made, "amount", 0)) == request.amount
            and field(made, "status") not in REFUND_GONE
        ):
            return made
    return None


def list_refunds(client: stripe.StripeClient, payment_id: str) -> list[GatewayRefund]:
    """The refunds of a PaymentIntent (or of a bare `ch_` charge), newest first."""
    of = "charge" if payment_id.startswith(CHARGE_PREFIX) else "payment_intent"
    found = client.v1.refunds.list(params={of: payment_id, "limit": PAGE})  # type: ignore[arg-type]
    return [
        GatewayRefund(
            provider=NAME,
            refund_id=str(r.id),
            payment_id=payment_id,
            order_id=str(field(field(r, "metadata", {}), "order_id", "")),
            amount=int(field(r, "amount", 0)),
            currency=str(field(r, "currency", "")).upper(),
            status=str(field(r, "status", "")),
        )
        for r in found.data
    ]
