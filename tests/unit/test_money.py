"""orderflow.money: exact parsing, no floats, one way to show an amount."""

from __future__ import annotations

import json

import pytest

from orderflow.money import MoneyError, format_money, round_major, to_major, to_minor
from payments.providers.stripe import parse_stripe, stripe_event


def test_amounts_parse_exactly_into_minor_units() -> None:
    assert to_minor("2,499.50", "INR") == 249_950
    assert to_minor("0.1", "INR") + to_minor("0.2", "INR") == to_minor("0.3", "INR")
    assert to_minor("1200", "JPY") == 1200  # a zero-decimal currency
    assert to_minor("1.005", "KWD") == 1005  # three decimals
    assert str(to_major(249_950, "INR")) == "2499.50"


@pytest.mark.parametrize(
    ("text", "currency", "problem"),
    [
        ("1.005", "INR", "more decimals than the currency's 2"),
        ("12.5", "JPY", "more decimals than the currency's 0"),
        ("abc", "INR", "is not an amount"),
        ("NaN", "INR", "is not an amount"),
        ("10", "rupees", "is not an ISO 4217 currency code"),
    ],
)
def test_an_amount_that_is_not_exact_is_refused_naming_it(
    text: str, currency: str, problem: str
) -> None:
    with pytest.raises(MoneyError, match=problem):
        to_minor(text, currency)


def test_amounts_show_one_way_everywhere() -> None:
    assert format_money(249_900, "INR") == "₹2,499.00"
    assert format_money(-150, "USD") == "-$1.50"
    assert format_money(1200, "JPY") == "¥1,200"
    assert format_money(100, "XXX") == "1.00 XXX"
    assert format_money(100, "") == "100 minor units of no currency"  # never raises in a workflow
    assert format_money(round_major(1598.5, "INR"), "INR") == "₹1,598.50"  # a Node job's `total`


def test_each_failed_stripe_charge_is_its_own_attempt() -> None:
    """payment_intent.payment_failed names its charge: failures of one PaymentIntent differ."""
    intent = {"id": "pi_1", "object": "payment_intent", "amount": 500, "currency": "inr",
              "metadata": {"order_id": "o-1"},
              "last_payment_error": {"message": "declined", "charge": "ch_2"}}  # fmt: skip
    failed = parse_stripe(
        json.dumps(stripe_event("payment_intent.payment_failed", intent)).encode()
    )
    assert (failed.payment_id, failed.attempt_id) == ("pi_1", "ch_2")
    charge = {"id": "ch_3", "object": "charge", "payment_intent": "pi_1", "amount": 500,
              "currency": "inr", "metadata": {"order_id": "o-1"}}  # fmt: skip
    again = parse_stripe(json.dumps(stripe_event("charge.failed", charge)).encode())
    assert (again.payment_id, again.attempt_id) == ("pi_1", "ch_3")


@pytest.mark.parametrize("major", ["1e99999999", "1e5000", "92233720368547758.08"])
def test_an_amount_past_64_bit_minor_units_is_refused_as_money_not_an_arithmetic_crash(
    major: str,
) -> None:
    with pytest.raises(MoneyError, match="too large"):
        to_minor(major, "INR")
    with pytest.raises(MoneyError, match="too large"):
        round_major(major, "INR")
    assert to_minor("92233720368547758.07", "INR") == 2**63 - 1  # the largest one still fits
