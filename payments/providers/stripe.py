"""Stripe's webhooks: `Stripe-Signature` (HMAC-SHA256 over `timestamp.body`, a tolerance window),
events whose object carries our order id in `metadata.order_id`."""

from __future__ import annotations

from orderflow.contracts.payment import GatewayName
from orderflow.settings import Settings
from payments.events import STRIPE_KINDS, parse_stripe
from payments.providers.base import Headers, WebhookProvider, register
from payments.samples import stripe_payment_failed, stripe_payment_succeeded
from payments.signatures import STRIPE_SIGNATURE_HEADER, sign_stripe, verify_stripe


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
    )
)
