"""Stripe: webhooks signed in `Stripe-Signature` (HMAC-SHA256 over `timestamp.body`, a tolerance
window), events whose object carries our order id in `metadata.order_id`; the API on the
official SDK (payments/stripe_gateway.py), keys `sk_…`/`rk_…`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orderflow.contracts.payment import GATEWAY_SETTINGS, GatewayName
from orderflow.settings import Settings
from payments.events import STRIPE_KINDS, parse_stripe
from payments.providers.base import Headers, WebhookProvider, register
from payments.samples import stripe_payment_failed, stripe_payment_succeeded
from payments.signatures import STRIPE_SIGNATURE_HEADER, sign_stripe, verify_stripe

if TYPE_CHECKING:
    from payments.gateway import PaymentGateway

# secret, restricted and publishable keys, should an error message ever echo one
KEY_PATTERNS = (r"\b(?:sk|rk|pk)_(?:live|test)_\w+",)


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
