"""A throwaway third payment provider for the tests (issue 19): everything the webhook side
needs, declared in this one module, as a real provider's module in payments/providers/ does.

Its events: `{"id", "type", "order", "payment", "amount", "currency"}`, signed with a hex
HMAC-SHA256 of the body in `X-Examplepay-Signature`. `register` it (and `unregister` after).
"""

from __future__ import annotations

import hashlib
import hmac
import json

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
)
