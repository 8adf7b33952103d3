"""The payload guard screens values as well as names: card numbers, token links, JWTs."""

from __future__ import annotations

import json
import uuid
from dataclasses import fields
from typing import Any

import pytest

from bridge.errors import PayloadRejectedError
from bridge.guard import PayloadGuard, luhn_valid
from bridge.producer import QueueProducer
from orderflow.settings import Settings
from payments.events import GatewayEvent
from payments.providers import parse_event
from payments.providers.razorpay import razorpay_payment_captured
from payments.providers.stripe import stripe_payment_succeeded
from workers.queues import email_spec, webhook_spec

GUARD = PayloadGuard("email-queue", 64 * 1024)
MAIL = {"to": "asha@example.com", "subject": "Your order", "data": {"orderNumber": "o-1001"}}


def check(data: Any) -> None:
    GUARD.check("send-welcome", "welcome-o-1001", data, json.dumps(data))


def refused(data: Any) -> str:
    with pytest.raises(PayloadRejectedError) as err:
        check(data)
    return str(err.value)


@pytest.mark.parametrize(
    "card",
    ["4242424242424242", "4242 4242 4242 4242", "4242-4242-4242-4242", "378282246310005",
     "5555555555554444", "6011111111111117", "card 4111 1111 1111 1111 please"],
)  # fmt: skip
def test_guard_refuses_a_luhn_valid_card_number_in_a_value(card: str) -> None:
    message = refused({**MAIL, "data": {"orderNumber": "o-1", "note": card}})
    assert "data.data.note" in message and "card number" in message
    assert "'welcome-o-1001'" in message  # names the job
    assert card not in message and card.replace(" ", "") not in message  # never the value


def test_guard_refuses_a_card_number_given_as_a_number_or_in_a_list() -> None:
    assert "data.data.cards[1]" in refused({**MAIL, "data": {"cards": [1, 4242424242424242]}})


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://shop.example/reset?token=6f1c2e9a", "'token' parameter"),
        ("https://shop.example/reset-password?t=1&code=918273", "'code' parameter"),
        ("https://shop.example/account#access_token=abc.def", "'access_token' parameter"),
        ("https://shop.example/reset-password/9f8a7c6b5d4e3f2a1b0c", "token in its path"),
        ("https://shop.example/verify/AbCdEf0123456789xyz", "token in its path"),
        ("https://ops:hunter22@shop.example/", "password in it"),
        ("see https://s3.example/bucket/x.pdf?X-Amz-Signature=ab12", "'X-Amz-Signature'"),
    ],
)
def test_guard_refuses_a_url_carrying_a_token(url: str, why: str) -> None:
    message = refused({**MAIL, "data": {"resetUrl": url}})
    assert "data.data.resetUrl" in message and why in message
    assert url not in message


def test_guard_refuses_a_json_web_token_in_a_value() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert "JSON Web Token" in refused({**MAIL, "data": {"note": f"Bearer {jwt}"}})


@pytest.mark.parametrize(
    "value",
    ["o-1001", "ORD-2026-000123", "1700000000000", "4242424242424241", "12345678901234567890123",
     "+91 98765 43210", "2026-11-28 09:00:00", "https://shop.example/orders/o-1001",
     "https://shop.example/track?order=o-1001&utm_source=mail", "pay_Nf3qk2P0TfXk2A",
     "https://shop.example/reset-password", "https://shop.example/help/returns-and-refunds"],
)  # fmt: skip
def test_guard_lets_order_numbers_and_ordinary_values_pass(value: str) -> None:
    check({**MAIL, "data": {"orderNumber": value, "link": value, "n": 1700000000000}})


def test_guard_lets_every_sample_gateway_event_pass() -> None:
    for provider, body in (
        ("stripe", stripe_payment_succeeded("o-1001", 159800)),
        ("razorpay", razorpay_payment_captured("o-1001", 159800)),
    ):
        event = parse_event(provider, body, headers={"X-Razorpay-Event-Id": "evt-1"})
        data = event.to_job()
        GUARD.check(event.job_name, event.job_id, data, json.dumps(data))


def test_luhn() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


@pytest.mark.parametrize(
    "value",
    [
        "evt_95f2a26889374496954e02ee",  # a webhook's event id the guard refused under load
        "pi_26889374496954xyz",
    ],
)
def test_a_luhn_valid_digit_run_inside_an_id_is_not_a_card_number(value: str) -> None:
    """Random gateway ids carry long digit runs; one in ten of them passes Luhn."""
    assert luhn_valid("26889374496954")
    check({**MAIL, "data": {"event_id": value}})


async def test_the_guard_screens_typed_text_not_the_ids_and_skus_the_system_generates(
    redis_url: str,
) -> None:
    """One generated id or barcode in ten passes Luhn; only free text is screened for cards."""
    settings = Settings(redis_url=redis_url)
    tag = uuid.uuid4().hex[:8]
    email = QueueProducer.connect(
        email_spec(settings).with_(prefix=f"g{tag}", name="mail"), redis_url
    )
    order_id, sku, tracking = "5234567890124", "5901234123457", "4000123456789017"
    assert all(luhn_valid(n) for n in (order_id, sku, tracking))
    mail = {
        "to": f"{order_id}@example.com",
        "subject": f"Order Confirmed — {order_id}",
        "template": "send-order-confirmation",
        "data": {
            "orderNumber": order_id,
            "invoiceNumber": f"INV-{order_id}",
            "items": [{"sku": sku, "quantity": 1, "unitPrice": "499.00", "unitPriceMinor": 49900}],
            "total": "499.00",
            "totalMinor": 49900,
            "carrier": "Delhivery",
            "trackingNumber": tracking,
        },
    }
    await email.add("send-order-confirmation", mail, {"jobId": f"oc-{tag}"})
    # free text is still screened, and names everywhere
    with pytest.raises(PayloadRejectedError, match=r"data\.data\.note .*card number"):
        await email.add("send-order-cancelled", {**mail, "data": {"note": f"card {tracking}"}})
    with pytest.raises(PayloadRejectedError, match=r"data\.data\.items\[0\]\.cardNumber"):
        await email.add("send-welcome", {**mail, "data": {"items": [{"cardNumber": "x"}]}})
    hooks = QueueProducer.connect(
        webhook_spec(settings).with_(prefix=f"g{tag}", name="h"), redis_url
    )
    event = parse_event("stripe", stripe_payment_succeeded(order_id, 129900))
    await hooks.add(event.job_name, event.to_job(), {"jobId": event.job_id})
    event.reason = f"card {tracking} declined"
    with pytest.raises(PayloadRejectedError, match=r"data\.reason .*card number"):
        await hooks.add(event.job_name, event.to_job(), {"jobId": f"{event.job_id}-2"})
    await email.close()
    await hooks.close()


def test_every_webhook_job_field_but_the_gateway_text_is_declared_system_generated() -> None:
    """A new field of GatewayEvent must be decided: generated (name screen) or free text."""
    spec = webhook_spec(Settings())
    assert spec.system_fields == {f.name for f in fields(GatewayEvent)} - {"reason"}
