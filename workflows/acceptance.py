"""What an order takes as its payment: the rules alone, no workflow state.

`OrderWorkflow` asks them with a `Due` (the order's id, total and currency, and the two patched
changes that decide an edge: asked only when they decide, as the workflow always asked them).
Pure and deterministic: safe in workflow code, tested without a server (tests/test_acceptance.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orderflow.contracts.order import PaymentReceived
from orderflow.contracts.payment import PARTIAL_CAPTURE_PROVIDERS
from orderflow.money import format_money


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Due:
    """What the order is owed, and how it decides the edges."""

    order_id: str
    total: int
    """Minor units of `currency`."""
    currency: str
    refuses_empty_currency: Callable[[], bool] = _always
    """A payment that names no currency is refused (orders from before took it as theirs)."""
    whole_hold_only: Callable[[], bool] = _always
    """A hold above the total only where the provider can capture part of it."""


@dataclass(frozen=True)
class Refusal:
    """Why a payment is refused: the order's history line and the payer's answer."""

    note: str
    reason: str


def in_currency(payment: PaymentReceived, due: Due) -> bool:
    """In the order's currency."""
    if payment.currency == due.currency:
        return True
    return payment.currency == "" and not due.refuses_empty_currency()


def matches_total(payment: PaymentReceived, due: Due) -> bool:
    """Exactly the total, in the order's currency."""
    return payment.amount == due.total and in_currency(payment, due)


def captures_part(payment: PaymentReceived, due: Due) -> bool:
    """Can the payment's provider capture the total from a larger hold?"""
    if payment.provider in PARTIAL_CAPTURE_PROVIDERS:
        return True
    return not due.whole_hold_only()


def acceptable(payment: PaymentReceived, due: Due) -> bool:
    """The total exactly; an authorisation may hold more where only the total can be taken."""
    if payment.authorised_only:
        if payment.amount < due.total or not in_currency(payment, due):
            return False
        return payment.amount == due.total or captures_part(payment, due)
    return matches_total(payment, due)


def currency_refusal(payment: PaymentReceived, due: Due) -> str:
    """Why a payment's currency is not the order's."""
    total = f"{format_money(due.total, due.currency)} ({due.currency})"
    if not payment.currency:
        return (
            f"payment {payment.payment_id} of {payment.amount} minor units names no"
            f" currency; the order's total is {total}"
        )
    paid = format_money(payment.amount, payment.currency)
    return f"payment {payment.payment_id} of {paid} is in {payment.currency}; the order's total is {total}"


def refusal(payment: PaymentReceived, due: Due) -> Refusal | None:
    """Why the order refuses this payment for its amount or currency; None: it takes it."""
    if acceptable(payment, due):
        return None
    order_id, pid = due.order_id, payment.payment_id
    if not in_currency(payment, due):
        why = currency_refusal(payment, due)
        return Refusal(f"refused {why}", f"order {order_id}: {why}: refused")
    paid = format_money(payment.amount, payment.currency or due.currency)
    total = format_money(due.total, due.currency)
    if payment.authorised_only and payment.amount > due.total:
        return Refusal(
            f"refused authorisation {pid}: {paid} is above {total}"
            f" ({payment.provider} captures only a whole hold)",
            f"order {order_id}: authorisation {pid} of {paid} is above the order total {total}"
            f" and {payment.provider} can capture only the whole hold: not captured",
        )
    if payment.authorised_only:
        return Refusal(
            f"refused authorisation {pid}: {paid} is below {total}",
            f"order {order_id}: authorisation {pid} of {paid} does not cover the order total"
            f" {total}: not captured",
        )
    return Refusal(
        f"refused payment {pid}: {paid} is not the total",
        f"order {order_id}: payment {pid} of {paid} does not match the order total {total}",
    )
