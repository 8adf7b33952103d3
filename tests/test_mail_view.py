"""Mail templates read the seed's job data as the seed writes it, and ours; a gap fails the job."""

from __future__ import annotations

from typing import Any

import pytest
from bullmq import UnrecoverableError
from sqlalchemy.engine import Engine

from bridge.errors import MalformedJobError
from bridge.job import Job
from mail.processor import EmailProcessor
from orderflow.settings import Settings
from workers.queues import email_spec

SEED_ITEMS = [
    {"sku": "TSHIRT-M", "name": "T-shirt (M)", "qty": 2, "price": 799},
    {"sku": "MUG-1", "name": "Mug", "qty": 3, "price": 19.990000000000002},  # a JavaScript float
]
OUR_ITEMS = [
    {"sku": "TSHIRT-M", "name": "T-shirt (M)", "quantity": 2, "unitPrice": "799.00",
     "unitPriceMinor": 79_900},
    {"sku": "MUG-1", "name": "Mug", "quantity": 3, "unitPrice": "19.99", "unitPriceMinor": 1999},
]  # fmt: skip


def job(name: str, data: dict[str, Any], job_id: str = "j-1") -> Job:
    mail = {"to": "meera@example.com", "subject": "Hello", "data": data}
    return Job(id=job_id, name=name, data=mail, opts={}, attempts_made=0, timestamp=0,
               token="t", queue="email-queue")  # fmt: skip


def processor(mail_engine: Engine, currency: str = "INR") -> EmailProcessor:
    settings = Settings(currency=currency)
    return EmailProcessor(settings, email_spec(settings), mail_engine)


@pytest.mark.parametrize(
    "data",
    [
        {"orderNumber": "o-42", "items": SEED_ITEMS, "total": 1657.97},
        {"orderNumber": "o-42", "items": SEED_ITEMS, "grandTotal": "1657.97"},
        {"orderNumber": "o-42", "items": OUR_ITEMS, "total": "1657.97", "totalMinor": 165_797,
         "currency": "INR"},
    ],
    ids=["seed-total", "seed-grandTotal", "ours"],
)  # fmt: skip
def test_an_order_confirmation_in_the_seeds_shape_or_ours_shows_quantity_price_and_total(
    mail_engine: Engine, data: dict[str, Any]
) -> None:
    mail = processor(mail_engine).render(job("send-order-confirmation", data))
    assert "T-shirt (M) x 2: ₹799.00" in mail.text
    assert "Mug x 3: ₹19.99" in mail.text
    assert "Total: ₹1,657.97" in mail.text
    assert '<td align="center">3</td>' in mail.html and "Total: ₹1,657.97" in mail.html


def test_the_currency_of_seed_amounts_is_the_shops_setting(mail_engine: Engine) -> None:
    data = {"orderNumber": "o-43", "items": [{"sku": "CAP", "qty": 1, "price": 12.5}],
            "total": 12.5}  # fmt: skip
    mail = processor(mail_engine, currency="USD").render(job("send-order-confirmation", data))
    assert "CAP x 1: $12.50" in mail.text and "Total: $12.50" in mail.text
    named = {**data, "currency": "EUR"}  # a job naming its currency keeps it
    cancelled = processor(mail_engine).render(job("send-order-cancelled", named))
    assert "Order total: €12.50." in cancelled.text


def test_shipping_and_reset_mails_carry_the_seeds_links(mail_engine: Engine) -> None:
    shipped = processor(mail_engine).render(job("send-shipping-notification", {
        "orderNumber": "o-44", "carrier": "BlueDart", "trackingNumber": "BD123",
        "trackingUrl": "https://track.example/BD123"}))  # fmt: skip
    assert "BlueDart tracking number: BD123" in shipped.text
    assert '<a href="https://track.example/BD123">' in shipped.html
    reset = processor(mail_engine).render(
        job("send-password-reset", {"resetUrl": "https://shop.example/reset/r-9"})
    )
    assert "https://shop.example/reset/r-9" in reset.text and "30 minutes" in reset.text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("send-order-confirmation",
         {"orderNumber": "o-1", "items": [SEED_ITEMS[0], {"sku": "MUG-1", "price": 5}],
          "total": 9}, "data.items[1] has none of quantity, qty"),
        ("send-order-confirmation",
         {"orderNumber": "o-1", "items": [{"sku": "MUG-1", "qty": 1}], "total": 9},
         "data.items[0] has none of unitPrice, price, unitPriceMinor"),
        ("send-order-confirmation",
         {"orderNumber": "o-1", "items": [{"qty": 1, "price": 9}], "total": 9},
         "data.items[0] has none of name, sku"),
        ("send-order-confirmation", {"orderNumber": "o-1", "items": SEED_ITEMS},
         "data has none of total, grandTotal, totalMinor"),
        ("send-order-confirmation", {"items": SEED_ITEMS, "total": 9}, "data has no orderNumber"),
        ("send-order-confirmation", {"orderNumber": "o-1", "items": [], "total": 9},
         "data.items is empty"),
        ("send-order-confirmation", {"orderNumber": "o-1", "items": SEED_ITEMS, "total": "lots"},
         "data.total 'lots' is not an amount"),
        ("send-order-confirmation",
         {"orderNumber": "o-1", "items": SEED_ITEMS, "total": 9, "currency": "rupees"},
         "data.currency 'rupees' is not an ISO 4217 currency code"),
        ("send-order-confirmation",
         {"orderNumber": "o-1", "items": SEED_ITEMS, "totalMinor": 9.5},
         "data.totalMinor is not a whole number of minor units"),
        ("send-shipping-notification", {"trackingNumber": "BD1"}, "data has no orderNumber"),
        ("send-shipping-notification", {"orderNumber": "o-1", "trackingUrl": "javascript:x()"},
         "data.trackingUrl is not an http(s) link"),
        ("send-password-reset", {"name": "Meera"}, "data has no resetUrl"),
        ("send-order-confirmation",  # a digit to str.isdigit, not to int()
         {"orderNumber": "o-1", "items": [{"name": "Mug", "qty": "²", "price": 1}], "total": 1},
         "data.items[0] '²' is not a whole number"),
    ],
)  # fmt: skip
def test_a_missing_or_unreadable_field_fails_the_job_unrecoverably_naming_it(
    mail_engine: Engine, name: str, data: dict[str, Any], reason: str
) -> None:
    with pytest.raises(MalformedJobError) as raised:
        processor(mail_engine).render(job(name, data, job_id="seed-77"))
    assert isinstance(raised.value, UnrecoverableError)  # no retry: to the DLQ at once
    assert str(raised.value) == f"email-queue: malformed job 'seed-77' ({name}): {reason}"


@pytest.mark.parametrize("total", ["1e5000", "1e99999999", 1e300])
def test_an_absurd_total_fails_the_job_naming_the_field_not_with_an_uncaught_error(
    mail_engine: Engine, total: Any
) -> None:
    data = {"orderNumber": "o-1", "items": SEED_ITEMS, "total": total}
    with pytest.raises(MalformedJobError) as raised:
        processor(mail_engine).render(job("send-order-confirmation", data, job_id="seed-78"))
    assert "'seed-78'" in str(raised.value) and "data.total" in str(raised.value)
