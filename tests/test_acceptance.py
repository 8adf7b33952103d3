"""The order's payment-acceptance rules (workflows/acceptance.py) as plain functions (issue 19):
what an order takes, and the words it refuses with."""

from __future__ import annotations

import pytest

from orderflow.contracts.order import PaymentReceived
from workflows.acceptance import Due, acceptable, in_currency, refusal

DUE = Due(order_id="o-1", total=10_000, currency="INR")


def pay(
    amount: int, currency: str = "INR", *, held: bool = False, provider: str = "stripe"
) -> PaymentReceived:
    return PaymentReceived("pay-1", amount, provider, currency=currency, authorised_only=held)


@pytest.mark.parametrize(
    ("payment", "taken"),
    [
        (pay(10_000), True),
        (pay(9_999), False),
        (pay(10_001), False),
        (pay(10_000, "USD"), False),
        (pay(10_000, ""), False),
        (pay(10_000, held=True), True),
        (pay(12_000, held=True), True),  # Stripe captures the total from a larger hold
        (pay(12_000, held=True, provider="razorpay"), False),  # Razorpay only the whole hold
        (pay(9_999, held=True), False),
        (pay(10_000, "USD", held=True), False),
    ],
    ids=[
        "exact",
        "short",
        "over",
        "other-currency",
        "no-currency",
        "hold",
        "larger-hold",
        "larger-razorpay-hold",
        "short-hold",
        "hold-other-currency",
    ],
)
def test_what_an_order_takes(payment: PaymentReceived, taken: bool) -> None:
    assert acceptable(payment, DUE) is taken
    assert (refusal(payment, DUE) is None) is taken


def test_orders_from_before_the_patches_take_what_they_took() -> None:
    before = Due(
        "o-1", 10_000, "INR", refuses_empty_currency=lambda: False, whole_hold_only=lambda: False
    )
    assert in_currency(pay(10_000, ""), before) and acceptable(pay(10_000, ""), before)
    assert acceptable(pay(12_000, held=True, provider="razorpay"), before)


def test_the_patches_are_asked_only_when_they_decide() -> None:
    asked: list[str] = []

    def ask(name: str) -> bool:
        asked.append(name)
        return True

    due = Due(
        "o-1",
        10_000,
        "INR",
        refuses_empty_currency=lambda: ask("empty"),
        whole_hold_only=lambda: ask("whole"),
    )
    acceptable(pay(10_000), due)
    acceptable(pay(12_000, held=True), due)  # Stripe: the provider decides, not the patch
    assert asked == []
    acceptable(pay(10_000, ""), due)
    acceptable(pay(12_000, held=True, provider="razorpay"), due)
    assert asked == ["empty", "whole"]


@pytest.mark.parametrize(
    ("payment", "note", "reason"),
    [
        (
            pay(9_999),
            "refused payment pay-1: ₹99.99 is not the total",
            "order o-1: payment pay-1 of ₹99.99 does not match the order total ₹100.00",
        ),
        (
            pay(10_000, "USD"),
            "refused payment pay-1 of $100.00 is in USD; the order's total is ₹100.00 (INR)",
            "order o-1: payment pay-1 of $100.00 is in USD; the order's total is ₹100.00 (INR): refused",
        ),
        (
            pay(10_000, ""),
            "refused payment pay-1 of 10000 minor units names no currency; the order's total is ₹100.00 (INR)",
            "order o-1: payment pay-1 of 10000 minor units names no currency; the order's total is ₹100.00 (INR): refused",
        ),
        (
            pay(9_999, held=True),
            "refused authorisation pay-1: ₹99.99 is below ₹100.00",
            "order o-1: authorisation pay-1 of ₹99.99 does not cover the order total ₹100.00: not captured",
        ),
        (
            pay(12_000, held=True, provider="razorpay"),
            "refused authorisation pay-1: ₹120.00 is above ₹100.00 (razorpay captures only a whole hold)",
            "order o-1: authorisation pay-1 of ₹120.00 is above the order total ₹100.00 and razorpay can capture only the whole hold: not captured",
        ),
    ],
    ids=["short", "other-currency", "no-currency", "short-hold", "larger-razorpay-hold"],
)
def test_a_refusal_names_the_payment_both_amounts_and_the_order(
    payment: PaymentReceived, note: str, reason: str
) -> None:
    refused = refusal(payment, DUE)
    assert refused is not None
    assert (refused.note, refused.reason) == (note, reason)
