"""Razorpay's webhooks: `X-Razorpay-Signature` (hex HMAC-SHA256 of the body), the event id in
`X-Razorpay-Event-Id`, our order id in the payment's `notes.order_id`."""

from __future__ import annotations

from orderflow.contracts.payment import GatewayName
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
    )
)
