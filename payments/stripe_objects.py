"""Reading Stripe's objects: their fields, a PaymentIntent or charge by id, each as a payment."""

from __future__ import annotations

from typing import Any

import stripe

from orderflow.contracts.payment import GatewayName, GatewayPayment, GatewayRequest

NAME = GatewayName.STRIPE.value
PAGE = 100  # Stripe's largest list page
CHARGE_PREFIX = "ch_"  # a payment made with the legacy Charges API (no PaymentIntent)


def field(obj: Any, name: str, default: Any = None) -> Any:
    """A field of a Stripe object or of a plain dict (expanded objects come back as either)."""
    if obj is None:
        return default
    try:
        value = obj[name]
    except (KeyError, TypeError, IndexError):
        return default
    return default if value is None else value


def id_of(obj: Any) -> str:
    """The id of an expandable field, whether Stripe sent the id or the object."""
    return obj if isinstance(obj, str) else str(field(obj, "id", ""))


def unknown(request: GatewayRequest) -> str:
    """Why a request names nothing Stripe knows, as a decline's detail."""
    what = "charge" if request.payment_id.startswith(CHARGE_PREFIX) else "PaymentIntent"
    named = f"{what} {request.payment_id!r}" if request.payment_id else what
    return f"no Stripe {named} known for order {request.order_id}"


def charge_of(client: stripe.StripeClient, charge_id: str) -> Any:
    """A charge by id (None: Stripe does not know it)."""
    try:
        return client.v1.charges.retrieve(charge_id)
    except stripe.InvalidRequestError as err:
        if err.code == "resource_missing" or err.http_status == 404:
            return None
        raise


def intent_of(client: stripe.StripeClient, request: GatewayRequest) -> Any:
    """The PaymentIntent named by the request, else the order's newest one (Search API).

    A payment id of another provider (a Razorpay `pay_`, a simulated one) names nothing here:
    refunding the order's Stripe payment instead could give back the wrong money.
    """
    intents = client.v1.payment_intents
    if request.payment_id and not request.payment_id.startswith("pi_"):
        return None
    if request.payment_id:
        try:
            return intents.retrieve(request.payment_id)
        except stripe.InvalidRequestError as err:
            if err.http_status != 404:
                raise
            return None
    try:
        found = intents.search(
            params={"query": f"metadata['order_id']:'{request.order_id}'", "limit": 10}
        )
    except stripe.InvalidRequestError:
        return None  # search is not offered (some accounts, local fakes)
    ranked = sorted(found.data, key=lambda i: (i.status == "succeeded", i.created))
    return ranked[-1] if ranked else None


def intent_payment(client: stripe.StripeClient, intent: Any) -> GatewayPayment:
    """A PaymentIntent as a payment: what its charge captured and refunded."""
    charge = field(intent, "latest_charge")
    if isinstance(charge, str):
        charge = client.v1.charges.retrieve(charge)
    received = int(field(intent, "amount_received", 0))
    if not received and charge is not None and field(charge, "captured", False):
        received = int(field(charge, "amount_captured", field(charge, "amount", 0)))
    return GatewayPayment(
        provider=NAME,
        payment_id=intent.id,
        order_id=str(field(field(intent, "metadata", {}), "order_id", "")),
        status=str(intent.status),
        captured=received if intent.status == "succeeded" else 0,
        refunded=int(field(charge, "amount_refunded", 0)) if charge is not None else 0,
        currency=str(intent.currency).upper(),
        created=float(field(intent, "created", 0)),
    )


def charge_payment(charge: Any) -> GatewayPayment:
    """A bare charge (no PaymentIntent) as a payment."""
    captured = field(charge, "captured", False) and field(charge, "status") == "succeeded"
    return GatewayPayment(
        provider=NAME,
        payment_id=charge.id,
        order_id=str(field(field(charge, "metadata", {}), "order_id", "")),
        status=str(field(charge, "status", "")),
        captured=int(field(charge, "amount_captured", field(charge, "amount", 0)))
        if captured
        else 0,
        refunded=int(field(charge, "amount_refunded", 0)),
        currency=str(field(charge, "currency", "")).upper(),
        created=float(field(charge, "created", 0)),
    )
