"""Razorpay through the official SDK against a loopback fake of its documented REST API."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError

from activities.erp import HttpErp
from activities.payment import PaymentActivities
from app.client import OrderClient
from orderflow.contracts.payment import (
    CheckoutRequest,
    GatewayName,
    GatewayRequest,
    PaymentKind,
    gateway_idempotency_key,
)
from orderflow.db import Order, Payment
from orderflow.settings import Settings
from payments.gateway import GatewayUnavailableError
from payments.processor import WebhookProcessor
from payments.providers import parse_event
from payments.razorpay_gateway import RazorpayGateway
from payments.reconciliation import reconcile
from payments.webhook_errors import WebhookEventError
from tests import temporal_env
from tests.fake_erp import FakeErp
from tests.fake_gateways import FakeRazorpay
from tests.helpers import new_order_id, payments, pending_order, wait_status
from workers.temporal import Dependencies, build_workers


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


@pytest.fixture(scope="module")
async def razorpay_orders(
    razorpay_api: FakeRazorpay, settings: Settings, engine: Engine, email_queue: Any, erp: FakeErp
) -> AsyncIterator[OrderClient]:
    """Temporal workers whose payments go to the Razorpay fake, and the order client."""
    local = settings.model_copy(
        update={
            "gateway": GatewayName.RAZORPAY,
            "razorpay_key_id": razorpay_api.key_id,
            "razorpay_key_secret": razorpay_api.key_secret,
            "razorpay_api_base": razorpay_api.url,
            "payment_retry_attempts": 2,
            "payment_retry_interval_seconds": 1.0,
        }
    )
    async with await temporal_env.start_local() as env:
        deps = dataclasses.replace(
            Dependencies.from_settings(local, engine, email_queue), erp=HttpErp(erp.url)
        )
        assert isinstance(deps.gateway, RazorpayGateway)
        workers = build_workers(env.client, local, deps)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        yield OrderClient(env.client, local, engine)
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_razorpay_payment_authorised_for_a_manual_capture_order_is_captured_once(
    razorpay_api: FakeRazorpay,
    razorpay_orders: OrderClient,
    catalogue: Callable[..., dict[str, str]],
    engine: Engine,
) -> None:
    skus = catalogue(item=(45_000, 5))
    order = await pending_order(razorpay_orders, [(skus["item"], 1)])
    checkout = await razorpay_orders.create_checkout(order.id, capture_manually=True)
    paid = razorpay_api.pay(checkout.payment_id)  # the customer completes Razorpay Checkout
    assert paid["status"] == "authorized"
    before = razorpay_api.captures
    # Razorpay's webhook for it (signatures are checked at the HTTP edge, tested elsewhere)
    body = json.dumps(
        {"entity": "event", "event": "payment.authorized",
         "payload": {"payment": {"entity": paid}}, "created_at": paid["created_at"]}
    ).encode()  # fmt: skip
    event = parse_event("razorpay", body, headers={"X-Razorpay-Event-Id": f"evt_{paid['id']}"})
    applied = await WebhookProcessor(razorpay_orders, engine).apply(event)
    assert applied["status"] == "applied", applied

    state = await wait_status(razorpay_orders, order.id, "CONFIRMED")
    assert state.payment_id == paid["id"]
    assert razorpay_api.payments[paid["id"]]["status"] == "captured"
    assert razorpay_api.captures == before + 1
    with Session(engine) as session:
        [row] = session.exec(select(Payment).where(Payment.order_id == order.id)).all()
    assert (row.kind, row.amount, row.payment_id) == ("capture", 45_000, paid["id"])
    assert row.detail == gateway_idempotency_key(
        order.id, PaymentKind.CAPTURE, 1, paid["id"], held=True
    )


async def test_a_razorpay_refund_the_webhook_records_before_the_activity_commits_is_paid_once(
    razorpay_api: FakeRazorpay, gateway: RazorpayGateway, engine: Engine
) -> None:
    """The refund is made but its answer is lost; the webhook worker records it from
    `refund.processed` before Temporal's retry of the activity commits its own row."""
    order_id = new_order_id()
    checkout = gateway.create_checkout(CheckoutRequest(order_id, 80_000, "INR"))
    paid = razorpay_api.pay(checkout.payment_id)  # the order auto-captures
    activities = PaymentActivities(engine, gateway)

    def attempt(n: int) -> GatewayRequest:
        key = gateway_idempotency_key(order_id, PaymentKind.REFUND, n, paid["id"])
        return GatewayRequest(order_id, PaymentKind.REFUND, 80_000, n, key, "INR", paid["id"])

    razorpay_api.lose_refund_answers = 1
    with pytest.raises(GatewayUnavailableError):
        await asyncio.to_thread(activities.call_gateway, attempt(1))
    [refund] = [r for r in razorpay_api.refunds.values() if r["payment_id"] == paid["id"]]
    body = json.dumps(
        {"entity": "event", "event": "refund.processed",
         "payload": {"refund": {"entity": refund}, "payment": {"entity": paid}}}
    ).encode()  # fmt: skip
    event = parse_event("razorpay", body, headers={"X-Razorpay-Event-Id": f"evt_{refund['id']}"})
    await WebhookProcessor(_NoOrders(), engine).apply(event)  # the webhook's row lands first

    retried = await asyncio.to_thread(activities.call_gateway, attempt(1))  # Temporal's retry
    assert (retried.succeeded, retried.payment_id) == (True, refund["id"])
    again = await asyncio.to_thread(activities.call_gateway, attempt(2))  # the next attempt
    assert (again.succeeded, again.payment_id) == (True, refund["id"])
    assert [r["id"] for r in razorpay_api.refunds.values() if r["payment_id"] == paid["id"]] == [
        refund["id"]
    ]
    assert payments(engine, order_id) == [("refund", "succeeded", 80_000)]


def test_a_razorpay_refund_attempt_after_one_whose_answer_was_lost_pays_nothing_more(
    razorpay_api: FakeRazorpay, gateway: RazorpayGateway, engine: Engine
) -> None:
    """Every try of attempt 1 lost its answer; attempt 2 has another receipt and must find the
    refund attempt 1 made (a partial refund would otherwise be paid twice)."""
    order_id = new_order_id()
    checkout = gateway.create_checkout(CheckoutRequest(order_id, 90_000, "INR"))
    paid = razorpay_api.pay(checkout.payment_id)
    activities = PaymentActivities(engine, gateway)

    def attempt(n: int) -> GatewayRequest:
        key = gateway_idempotency_key(order_id, PaymentKind.REFUND, n, paid["id"])
        return GatewayRequest(order_id, PaymentKind.REFUND, 30_000, n, key, "INR", paid["id"])

    razorpay_api.lose_refund_answers = 1
    with pytest.raises(GatewayUnavailableError):
        activities.call_gateway(attempt(1))
    answer = activities.call_gateway(attempt(2))
    assert answer.succeeded, answer.detail
    refunds = [r for r in razorpay_api.refunds.values() if r["payment_id"] == paid["id"]]
    assert [(r["id"], r["amount"]) for r in refunds] == [(answer.payment_id, 30_000)]
    assert payments(engine, order_id) == [("refund", "succeeded", 30_000)]


class _NoOrders:
    """The webhook worker's order client, for events that never reach an order (refunds)."""

    async def payment_received(self, order_id: str, payment: Any) -> Any:
        raise AssertionError(f"no payment expected for order {order_id}")

    async def payment_failed(self, order_id: str, failure: Any) -> None:
        raise AssertionError(f"no failure expected for order {order_id}")


async def test_a_razorpay_refund_that_fails_after_the_order_was_cancelled_makes_it_refund_failed(
    razorpay_api: FakeRazorpay,
    razorpay_orders: OrderClient,
    catalogue: Callable[..., dict[str, str]],
    engine: Engine,
) -> None:
    skus = catalogue(item=(27_500, 5))
    order = await pending_order(razorpay_orders, [(skus["item"], 1)])
    checkout = await razorpay_orders.create_checkout(order.id)
    paid = razorpay_api.pay(checkout.payment_id)  # the order auto-captures
    processor = WebhookProcessor(razorpay_orders, engine)
    captured = json.dumps(
        {"entity": "event", "event": "payment.captured", "payload": {"payment": {"entity": paid}}}
    ).encode()
    await processor.apply(
        parse_event("razorpay", captured, headers={"X-Razorpay-Event-Id": f"e_{paid['id']}"})
    )
    await wait_status(razorpay_orders, order.id, "CONFIRMED")
    await razorpay_orders.cancel(order.id, "customer changed their mind")
    await wait_status(razorpay_orders, order.id, "CANCELLED")
    [refund] = [r for r in razorpay_api.refunds.values() if r["payment_id"] == paid["id"]]

    failed = {**refund, "status": "failed"}
    body = json.dumps(
        {"entity": "event", "event": "refund.failed",
         "payload": {"refund": {"entity": failed}, "payment": {"entity": paid}}}
    ).encode()  # fmt: skip
    event = parse_event("razorpay", body, headers={"X-Razorpay-Event-Id": f"evt_f_{refund['id']}"})
    with pytest.raises(WebhookEventError) as put:  # to the dead-letter queue, for an operator
        await processor.apply(event)
    assert refund["id"] in str(put.value) and order.id in str(put.value)
    assert "₹275.00" in str(put.value)
    with Session(engine) as session:
        row = session.exec(select(Payment).where(Payment.payment_id == refund["id"])).one()
        placed = session.get(Order, order.id)
    assert row.status == "failed"
    assert placed is not None and placed.status == "REFUND_FAILED"
