"""A throwaway third payment provider for the tests (issue 19): everything the webhook side
and the API side need, declared in this one module, as a real provider's module in
payments/providers/ does.

Its events: `{"id", "type", "order", "payment", "amount", "currency"}`, signed with a hex
HMAC-SHA256 of the body in `X-Examplepay-Signature`; its keys `exp_live_…`/`exp_test_…`; its
gateway a fake that accepts every call. `register` it (and `unregister` after).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime

from orderflow.contracts.payment import (
    Checkout,
    CheckoutRequest,
    GatewayPayment,
    GatewayRefund,
    GatewayRequest,
    GatewayResponse,
    HoldState,
    HoldStatus,
)
from orderflow.settings import Settings
from payments.events import EventKind, GatewayEvent, MalformedEventError
from payments.providers import Headers, WebhookProvider
from payments.signatures import SignatureError

NAME = "examplepay"
HEADER = "X-Examplepay-Signature"
SECRET = "examplepay_test_secret"  # a real provider reads its secret from settings
KINDS = {"payment.done": EventKind.PAYMENT_RECEIVED, "payment.failed": EventKind.PAYMENT_FAILED}


def _signature(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, headers: Headers, settings: Settings) -> None:
    given = headers.get(HEADER)
    if not given:
        raise SignatureError(NAME, f"the {HEADER} header is missing")
    if not hmac.compare_digest(_signature(body), given.strip()):
        raise SignatureError(NAME, "the signature does not match the body")


def sign(
    payload: bytes, settings: Settings, timestamp: int | None, event_id: str | None
) -> dict[str, str]:
    return {"Content-Type": "application/json", HEADER: _signature(payload)}


def parse(body: bytes, headers: Headers) -> GatewayEvent:
    try:
        event = json.loads(body)
    except ValueError as err:
        raise MalformedEventError(NAME, "", f"not JSON: {err}") from None
    if not isinstance(event, dict) or not event.get("id"):
        raise MalformedEventError(NAME, "", "no event id")
    etype = str(event.get("type", ""))
    return GatewayEvent(
        provider=NAME,
        event_id=str(event["id"]),
        type=etype,
        kind=KINDS.get(etype, EventKind.IGNORED).value,
        order_id=str(event.get("order", "")),
        payment_id=str(event.get("payment", "")),
        amount_minor=event.get("amount"),
        currency=str(event.get("currency", "")),
        reason="declined" if etype == "payment.failed" else "",
    )


def _event(etype: str, order_id: str, amount_minor: int) -> bytes:
    body = {"id": f"ex_evt_{etype}_{order_id}", "type": etype, "order": order_id,
            "payment": f"ex_pay_{order_id}", "amount": amount_minor, "currency": "INR"}  # fmt: skip
    return json.dumps(body).encode()


class FakeGateway:
    """ExamplePay's API, outside the system: every call is accepted, nothing is kept."""

    name = NAME

    def capture(self, request: GatewayRequest) -> GatewayResponse:
        return GatewayResponse(True, f"ex_pay_{request.order_id}", "captured", NAME)

    def refund(self, request: GatewayRequest) -> GatewayResponse:
        return GatewayResponse(True, f"ex_ref_{request.idempotency_key}", "refunded", NAME)

    def release(self, request: GatewayRequest) -> GatewayResponse:
        return GatewayResponse(True, request.payment_id, "released", NAME)

    def hold_status(self, request: GatewayRequest) -> HoldStatus:
        return HoldStatus(request.payment_id, HoldState.RELEASED)

    def fetch(self, payment_id: str) -> GatewayPayment | None:
        return None

    def list_payments(self, since: datetime) -> list[GatewayPayment]:
        return []

    def list_refunds(self, payment_id: str) -> list[GatewayRefund]:
        return []

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        return Checkout(
            provider=NAME,
            payment_id=f"ex_chk_{request.order_id}",
            status="open",
            amount=request.amount,
            currency=request.currency,
        )


EXAMPLEPAY = WebhookProvider(
    name=NAME,
    title="ExamplePay",
    signature_header=HEADER,
    verify=verify,
    sign=sign,
    parse=parse,
    kinds=KINDS,
    order_id_field="order",
    samples={
        "paid": lambda order_id, amount: _event("payment.done", order_id, amount),
        "failed": lambda order_id, amount: _event("payment.failed", order_id, amount),
    },
    gateway=lambda settings: FakeGateway(),
    key_patterns=(r"\bexp_(?:live|test)_\w+",),
)
