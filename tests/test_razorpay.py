"""Razorpay through the official SDK against a loopback fake of its documented REST API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError

from activities.payment import PaymentActivities
from orderflow.contracts.payment import (
    CheckoutRequest,
    GatewayRequest,
    PaymentKind,
    gateway_idempotency_key,
)
from orderflow.db import Payment
from payments.gateway import GatewayUnavailableError
from payments.razorpay_gateway import RazorpayGateway
from payments.reconciliation import reconcile
from tests.fake_gateways import FakeRazorpay
from tests.helpers import new_order_id, payments


@pytest.fixture(scope="module")
def razorpay_api() -> Iterator[FakeRazorpay]:
    """The fake Razorpay API on a free loopback port."""
    fake = FakeRazorpay().start()
    yield fake
    fake.stop()


@pytest.fixture
def gateway(razorpay_api: FakeRazorpay) -> RazorpayGateway:
    return RazorpayGateway(
        razorpay_api.key_id, razorpay_api.key_secret, api_base=razorpay_api.url, timeout=5
    )


def request(order_id: str, kind: PaymentKind, amount: int, payment_id: str = "") -> GatewayRequest:
    return GatewayRequest(
        order_id=order_id,
        kind=kind,
        amount=amount,
        attempt=1,
        idempotency_key=gateway_idempotency_key(order_id, kind, 1, payment_id),
        currency="INR",
        payment_id=payment_id,
    )


def test_an_authorised_payment_is_captured_and_refunded_once_in_paise(
    razorpay_api: FakeRazorpay, gateway: RazorpayGateway, engine: Engine
) -> None:
    order_id = new_order_id()
    checkout = gateway.create_checkout(
        CheckoutRequest(order_id, 249_900, "INR", capture_manually=True)
    )
    assert razorpay_api.orders[checkout.payment_id]["receipt"] == order_id
    assert razorpay_api.orders[checkout.payment_id]["amount"] == 249_900  # paise
    paid = razorpay_api.pay(checkout.payment_id)
    assert paid["status"] == "authorized"
    activities = PaymentActivities(engine, gateway)
    before = razorpay_api.captures

    capture = request(order_id, PaymentKind.CAPTURE, 249_900)
    answer = activities.call_gateway(capture)
    assert (answer.succeeded, answer.payment_id, answer.provider) == (True, paid["id"], "razorpay")
    assert gateway.capture(capture).succeeded  # a retry after a lost answer: captured already
    assert razorpay_api.captures == before + 1
    assert razorpay_api.payments[paid["id"]]["status"] == "captured"

    refund = request(order_id, PaymentKind.REFUND, 249_900, paid["id"])
    refunded = activities.call_gateway(refund)
    assert refunded.succeeded and refunded.payment_id.startswith("rfnd_")
    assert gateway.refund(refund).payment_id == refunded.payment_id  # same key: same refund
    assert [
        r["amount"] for r in razorpay_api.refunds.values() if r["payment_id"] == paid["id"]
    ] == [249_900]
    assert payments(engine, order_id) == [
        ("capture", "succeeded", 249_900),
        ("refund", "succeeded", 249_900),
    ]
    with Session(engine) as session:
        row = session.exec(select(Payment).where(Payment.payment_id == refunded.payment_id)).one()
    assert row.refund_of == paid["id"]


def test_a_failed_payment_is_declined_a_5xx_is_retried_and_a_wrong_key_is_not(
    razorpay_api: FakeRazorpay, gateway: RazorpayGateway, engine: Engine
) -> None:
    order_id = new_order_id()
    checkout = gateway.create_checkout(
        CheckoutRequest(order_id, 50_000, "INR", capture_manually=True)
    )
    failed = razorpay_api.pay(checkout.payment_id, fail="Payment failed: insufficient funds")
    declined = gateway.capture(request(order_id, PaymentKind.CAPTURE, 50_000, failed["id"]))
    assert not declined.succeeded
    assert failed["id"] in declined.detail and "insufficient funds" in declined.detail

    # a payment of another gateway names nothing here: no refund of some other payment instead
    foreign = gateway.refund(request(order_id, PaymentKind.REFUND, 50_000, "pi_3Pstripe"))
    assert not foreign.succeeded and "'pi_3Pstripe'" in foreign.detail

    razorpay_api.fail_next = 1
    with pytest.raises(GatewayUnavailableError) as unavailable:
        gateway.capture(request(order_id, PaymentKind.CAPTURE, 50_000, failed["id"]))
    assert order_id in str(unavailable.value)

    wrong = RazorpayGateway(razorpay_api.key_id, "not-the-secret", api_base=razorpay_api.url)
    with pytest.raises(ApplicationError) as refused:  # the activity: no retries for this
        PaymentActivities(engine, wrong).call_gateway(
            request(order_id, PaymentKind.CAPTURE, 50_000, failed["id"])
        )
    assert refused.value.non_retryable and "Authentication failed" in str(refused.value)
    assert order_id in str(refused.value)


def test_reconciliation_finds_a_razorpay_payment_no_order_saw(
    razorpay_api: FakeRazorpay, gateway: RazorpayGateway, engine: Engine
) -> None:
    ghost = new_order_id()
    checkout = gateway.create_checkout(CheckoutRequest(ghost, 12_345, "INR"))
    captured = razorpay_api.pay(checkout.payment_id)  # the order auto-captures
    assert captured["status"] == "captured"
    report = reconcile(engine, gateway=gateway, window_hours=1)
    [found] = [m for m in report["mismatches"] if m["payment_id"] == captured["id"]]
    assert (found["kind"], found["order_id"]) == ("captured_not_recorded", ghost)
    assert "razorpay:" in found["detail"] and "₹123.45" in found["detail"]
    assert "orderflow: no capture recorded" in found["detail"]
    fetched = gateway.fetch(captured["id"])
    assert fetched is not None and (fetched.captured, fetched.currency) == (12_345, "INR")
    assert gateway.fetch("pay_unknown") is None
