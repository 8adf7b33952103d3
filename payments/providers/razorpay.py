"""Razorpay: webhooks signed in `X-Razorpay-Signature` (hex HMAC-SHA256 of the body), the event
id in `X-Razorpay-Event-Id`, our order id in the payment's `notes.order_id`; the API on the
official SDK (payments/razorpay_gateway.py), key ids `rzp_…`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orderflow.contracts.payment import GATEWAY_SETTINGS, GatewayName
from orderflow.settings import Settings
from payments.events import RAZORPAY_KINDS, parse_razorpay
from payments.providers.base import Headers, WebhookProvider, register
from payments.samples import razorpay_payment_captured, razorpay_payment_failed
from payments.signatures import (
    RAZORPAY_EVENT_ID_HEADER,
    RAZORPAY_SIGNATURE_HEADER,
    sign_razorpay,
    verify_razorpay,
)

if TYPE_CHECKING:
    from payments.gateway import PaymentGateway

# key ids, should an error message ever echo one (the key secret has no prefix to find)
KEY_PATTERNS = (r"\brzp_(?:live|test)_\w+",)


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
