"""The hold lookup (PaymentActivities.hold_status) against localstripe and the Razorpay fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe
from sqlalchemy.engine import Engine

from activities.payment import PaymentActivities
from orderflow.contracts.payment import (
    CheckoutRequest,
    GatewayRequest,
    HoldState,
    PaymentKind,
    gateway_idempotency_key,
)
from payments.razorpay_gateway import RazorpayGateway
from payments.stripe_gateway import StripeGateway
from tests.fake_gateways import STRIPE_TEST_KEY, FakeRazorpay, LocalStripe
from tests.helpers import new_order_id


def _request(order_id: str, kind: PaymentKind, amount: int, payment_id: str) -> GatewayRequest:
    key = gateway_idempotency_key(order_id, kind, 1, payment_id)
    return GatewayRequest(order_id, kind, amount, 1, key, "INR", payment_id)


def test_a_stripe_hold_is_held_then_captured_in_part_or_released(
    localstripe: LocalStripe, engine: Engine
) -> None:
    client = stripe.StripeClient(
        STRIPE_TEST_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0
    )
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    method = client.v1.payment_methods.create(params={"type": "card", "card": card}).id
    gateway = StripeGateway(STRIPE_TEST_KEY, api_base=localstripe.url)
    activities = PaymentActivities(engine, gateway)
    order_id = new_order_id()
    holds = [
        gateway.create_checkout(
            CheckoutRequest(order_id, 50_000, "INR", payment_method=method, capture_manually=True)
        ).payment_id
        for _ in range(2)
    ]
    asked = [_request(order_id, PaymentKind.RELEASE, 50_000, hold) for hold in holds]
    status = activities.hold_status(asked[0])
    assert (status.state, status.captured, status.currency) == (HoldState.HELD, 0, "INR")

    assert gateway.capture(_request(order_id, PaymentKind.CAPTURE, 31_500, holds[0])).succeeded
    status = activities.hold_status(asked[0])
    # what is left to give back (localstripe shows the uncaptured rest as refunded)
    assert (status.state, status.captured - status.refunded) == (HoldState.CAPTURED, 31_500)

    assert gateway.release(asked[1]).succeeded
    assert activities.hold_status(asked[1]).state is HoldState.RELEASED
    unknown = _request(order_id, PaymentKind.RELEASE, 1, "pi_nobody_knows")
    assert activities.hold_status(unknown).state is HoldState.UNKNOWN


@pytest.fixture(scope="module")
def razorpay_api() -> Iterator[FakeRazorpay]:
    """The fake Razorpay API on a free loopback port."""
    fake = FakeRazorpay().start()
    yield fake
    fake.stop()


def test_a_razorpay_hold_is_held_captured_whole_or_released(
    razorpay_api: FakeRazorpay, engine: Engine
) -> None:
    gateway = RazorpayGateway(
        razorpay_api.key_id, razorpay_api.key_secret, api_base=razorpay_api.url, timeout=5
    )
    activities = PaymentActivities(engine, gateway)
    order_id = new_order_id()
    manual = gateway.create_checkout(
        CheckoutRequest(order_id, 40_000, "INR", capture_manually=True)
    )
    held = razorpay_api.pay(manual.payment_id)["id"]
    failed = razorpay_api.pay(manual.payment_id, fail="card declined")["id"]
    asked = _request(order_id, PaymentKind.RELEASE, 40_000, held)
    assert activities.hold_status(asked).state is HoldState.HELD
    assert gateway.capture(_request(order_id, PaymentKind.CAPTURE, 40_000, held)).succeeded
    status = activities.hold_status(asked)
    assert (status.state, status.captured, status.refunded) == (HoldState.CAPTURED, 40_000, 0)

    refund = _request(order_id, PaymentKind.REFUND, 10_000, held)
    assert gateway.refund(refund).succeeded
    assert activities.hold_status(asked).refunded == 10_000
    failure = _request(order_id, PaymentKind.RELEASE, 40_000, failed)
    assert activities.hold_status(failure).state is HoldState.RELEASED
    unknown = _request(order_id, PaymentKind.RELEASE, 1, "pay_nobody_knows")
    assert activities.hold_status(unknown).state is HoldState.UNKNOWN
