"""Stripe through the official SDK against localstripe (a stateful fake Stripe that sends signed
webhooks): checkout → webhook → order, capture retries, refunds, reconciliation, idempotency.

The module runs its own Temporal dev server whose workers use the Stripe gateway on the real
task queue names (the order workflow starts its payment children on `payments`), and the real
HTTP app + webhook worker that localstripe's webhooks reach.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.worker import Worker

from activities.payment import PaymentActivities
from app.client import policy_from_settings
from bridge.admin import QueueAdmin
from bridge.producer import QueueProducer
from orderflow.contracts.payment import (
    CheckoutRequest,
    GatewayRequest,
    PaymentKind,
    PaymentRetryInput,
    gateway_idempotency_key,
    payment_retry_workflow_id,
)
from orderflow.db import Order, Payment, WebhookEvent
from payments.gateway import GatewayConfigError, GatewayUnavailableError
from payments.processor import WebhookProcessor
from payments.providers.stripe import parse_stripe, sign_stripe, stripe_event
from payments.reconciliation import enqueue_reconciliation
from payments.stripe_gateway import StripeGateway
from tests.bridge_helpers import bull_queue
from tests.fake_gateways import STRIPE_TEST_KEY, LocalStripe, StallingProxy
from tests.helpers import eventually, new_order_id, payments, pending_order, wait_status
from tests.stripe_system import DECLINED_CARD, GOOD_CARD, StripeSystem, card, make_default
from workflows.payment import PaymentRetryWorkflow

Catalogue = Callable[..., dict[str, str]]


async def test_checkout_payment_intent_confirmed_sends_a_signed_webhook_that_confirms_the_order(
    system: StripeSystem, catalogue: Catalogue, engine: Engine
) -> None:
    skus = catalogue(item=(249_900, 5))
    order = await pending_order(system.orders, [(skus["item"], 1)])
    checkout = await system.orders.create_checkout(order.id)  # the storefront's step
    intent = system.stripe.v1.payment_intents.retrieve(checkout.payment_id)
    assert intent.metadata["order_id"] == order.id
    assert (intent.amount, intent.currency.upper()) == (249_900, "INR")
    assert checkout.client_secret and checkout.status == "requires_payment_method"

    # the customer confirms with a card (Stripe.js would); localstripe then posts the event
    system.stripe.v1.payment_intents.update(
        checkout.payment_id, params={"payment_method": card(system, GOOD_CARD)}
    )
    system.stripe.v1.payment_intents.confirm(checkout.payment_id)
    state = await wait_status(system.orders, order.id, "CONFIRMED")
    assert state.payment_id == checkout.payment_id
    assert payments(engine, order.id) == [("capture", "succeeded", 249_900)]


async def test_a_capture_declined_at_checkout_is_retried_and_charges_the_customers_new_card(
    system: StripeSystem, catalogue: Catalogue, engine: Engine
) -> None:
    skus = catalogue(item=(99_900, 5))
    order = await pending_order(system.orders, [(skus["item"], 1)])
    customer = system.stripe.v1.customers.create(params={"email": f"{order.id}@example.com"}).id
    declining = card(system, DECLINED_CARD, customer)
    make_default(system, customer, declining)
    checkout = await system.orders.create_checkout(
        order.id, customer=customer, payment_method=declining
    )
    assert checkout.detail.startswith("card declined")
    # localstripe's payment_intent.payment_failed starts the retries; the first is declined too
    await wait_status(system.orders, order.id, "PAYMENT_RETRYING")
    retry = system.env.client.get_workflow_handle_for(
        PaymentRetryWorkflow.run, payment_retry_workflow_id(order.id, PaymentKind.CAPTURE)
    )

    async def first_attempt() -> bool:
        try:
            return len(await retry.query(PaymentRetryWorkflow.attempts)) >= 1
        except Exception:  # not started yet
            return False

    await eventually(first_attempt, 20, "the first capture retry")
    make_default(system, customer, card(system, GOOD_CARD, customer))  # the customer's new card

    state = await wait_status(system.orders, order.id, "CONFIRMED", timeout=30)
    result = await retry.result()
    assert result.succeeded and result.attempts[0].succeeded is False
    assert "declined" in result.attempts[0].detail
    assert result.attempts[-1].succeeded and result.payment_id == state.payment_id
    captured = system.stripe.v1.payment_intents.retrieve(result.payment_id)
    assert captured.status == "succeeded" and captured.metadata["order_id"] == order.id
    assert captured.capture_method == "manual"  # authorised, then captured with our key
    assert payments(engine, order.id)[-1] == ("capture", "succeeded", 99_900)
    assert state.failed_payments == 1  # the retries' own declines are not new failures


async def test_a_cancel_after_payment_refunds_and_the_refund_is_visible_in_localstripe(
    system: StripeSystem, catalogue: Catalogue, engine: Engine
) -> None:
    skus = catalogue(item=(59_900, 5))
    order = await pending_order(system.orders, [(skus["item"], 2)])
    checkout = await system.orders.create_checkout(order.id, payment_method=card(system, GOOD_CARD))
    assert checkout.status == "succeeded"
    await wait_status(system.orders, order.id, "CONFIRMED")
    await system.orders.cancel(order.id, "customer changed their mind")
    await wait_status(system.orders, order.id, "CANCELLED")

    refunds = system.stripe.v1.refunds.list(params={"payment_intent": checkout.payment_id})
    assert [(r.amount, r.status) for r in refunds.data] == [(119_800, "succeeded")]
    with Session(engine) as session:
        rows = session.exec(select(Payment).where(Payment.order_id == order.id)).all()
    refund = next(r for r in rows if r.kind == PaymentKind.REFUND)
    assert (refund.payment_id, refund.refund_of, refund.amount) == (
        refunds.data[0].id,
        checkout.payment_id,
        119_800,
    )


async def test_reconciliation_finds_a_payment_captured_in_localstripe_that_no_order_saw(
    system: StripeSystem, catalogue: Catalogue, engine: Engine, redis_url: str
) -> None:
    ghost = new_order_id()
    orphan = system.stripe.v1.payment_intents.create(
        params={
            "amount": 4200,
            "currency": "inr",
            "payment_method": card(system, GOOD_CARD),
            "confirm": True,
            "metadata": {"order_id": ghost},
        }
    )
    assert orphan.status == "succeeded"
    # and the other directions: a capture of ours Stripe never took, an amount that differs,
    # and a refund we recorded that Stripe never made
    skus = catalogue(item=(10_000, 5))
    paid = await pending_order(system.orders, [(skus["item"], 1)])
    checkout = await system.orders.create_checkout(paid.id, payment_method=card(system, GOOD_CARD))
    await wait_status(system.orders, paid.id, "CONFIRMED")
    missing, short = (
        f"pi_missing_{uuid.uuid4().hex[:8]}",
        system.stripe.v1.payment_intents.create(
            params={
                "amount": 5000,
                "currency": "inr",
                "payment_method": card(system, GOOD_CARD),
                "confirm": True,
                "metadata": {"order_id": paid.id},
            }
        ),
    )
    with Session(engine) as session:
        session.add(_row(paid.id, missing, PaymentKind.CAPTURE, 7000))
        session.add(_row(paid.id, short.id, PaymentKind.CAPTURE, 5500))
        session.add(_row(paid.id, f"re_never_{uuid.uuid4().hex[:6]}", PaymentKind.REFUND, 10_000,
                         refund_of=checkout.payment_id))  # fmt: skip
        session.commit()

    producer = QueueProducer.connect(system.spec, redis_url)
    job_id = await enqueue_reconciliation(producer, window_hours=1, job_id=f"recon-{ghost}")
    await producer.close()
    queue = bull_queue(system.spec, redis_url)

    async def report() -> dict[str, Any] | None:
        job = await queue.getJob(job_id)
        return job.returnvalue if job is not None and job.finishedOn else None

    found = await eventually(report, 30, "the reconciliation job's report")
    await queue.close()
    assert found["gateway"] == "stripe" and found["checked_gateway_payments"] >= 3
    by_payment = {(m["kind"], m["payment_id"]): m for m in found["mismatches"]}
    orphaned = by_payment[("captured_not_recorded", orphan.id)]
    assert orphaned["order_id"] == ghost
    assert "stripe:" in orphaned["detail"] and "₹42.00" in orphaned["detail"]
    assert "orderflow: no capture recorded" in orphaned["detail"]
    gone = by_payment[("capture_not_at_gateway", missing)]["detail"]
    assert "orderflow:" in gone and "₹70.00" in gone and "stripe: no such payment" in gone
    differs = by_payment[("gateway_amount_mismatch", short.id)]["detail"]
    assert "₹50.00" in differs and "orderflow: ₹55.00" in differs
    refund = by_payment[("refund_not_at_gateway", checkout.payment_id)]["detail"]
    assert (
        "stripe:" in refund
        and "refunded ₹0.00" in refund
        and "orderflow: refunded ₹100.00" in refund
    )
    # the order paid through the normal loop is in step on both sides
    assert not [m for m in found["mismatches"]
                if m["payment_id"] == checkout.payment_id and m["kind"] != "refund_not_at_gateway"]  # fmt: skip


def _row(
    order_id: str, payment_id: str, kind: PaymentKind, amount: int, refund_of: str = ""
) -> Payment:
    return Payment(
        order_id=order_id,
        provider="stripe",
        payment_id=payment_id,
        kind=kind,
        amount=amount,
        currency="INR",
        status="succeeded",
        refund_of=refund_of,
    )


async def test_a_capture_activity_retried_after_a_timeout_sends_the_same_key_and_charges_once(
    system: StripeSystem, engine: Engine
) -> None:
    proxy = StallingProxy(system.localstripe.url, stall_suffix="/capture").start()
    try:
        # a gateway whose first capture reaches Stripe but whose answer never comes back
        gateway = StripeGateway(STRIPE_TEST_KEY, api_base=proxy.url, timeout=1.0)
        order_id = new_order_id()
        authorised = StripeGateway(STRIPE_TEST_KEY, api_base=system.localstripe.url)
        checkout = await asyncio.to_thread(
            authorised.create_checkout,
            _checkout(order_id, card(system, GOOD_CARD)),
        )
        assert checkout.status == "requires_capture"
        queue = f"payments-timeout-{order_id}"
        async with Worker(
            system.env.client,
            task_queue=queue,
            workflows=[PaymentRetryWorkflow],
            activities=[PaymentActivities(engine, gateway).call_gateway],
            activity_executor=ThreadPoolExecutor(max_workers=2),
        ):
            handle = await system.env.client.start_workflow(
                PaymentRetryWorkflow.run,
                PaymentRetryInput(
                    order_id=order_id,
                    kind=PaymentKind.CAPTURE,
                    amount=31_500,
                    attempts=1,
                    currency="INR",
                    payment_id=checkout.payment_id,
                ),
                id=f"timeout-{order_id}",
                task_queue=queue,
            )
            result = await handle.result()
        assert result.succeeded and result.payment_id == checkout.payment_id
        key = gateway_idempotency_key(order_id, PaymentKind.CAPTURE, 1, checkout.payment_id)
        assert proxy.keys("/capture") == [key, key]  # the retry sent the same key
        started = [
            e.activity_task_started_event_attributes.attempt
            async for e in handle.fetch_history_events()
            if e.HasField("activity_task_started_event_attributes")
        ]
        assert started == [2]  # Temporal retried the activity after the timeout
        charged = system.stripe.v1.payment_intents.retrieve(checkout.payment_id)
        assert charged.status == "succeeded"
        charges = system.stripe.v1.charges.list(params={"limit": 100}).data
        mine = [c for c in charges if c.payment_intent == checkout.payment_id]
        assert [(c.amount, c.captured) for c in mine] == [(31_500, True)]  # charged once
        assert payments(engine, order_id) == [("capture", "succeeded", 31_500)]
    finally:
        proxy.stop()


def _checkout(order_id: str, method: str) -> CheckoutRequest:
    """An authorised (manual-capture) PaymentIntent of ₹315.00 for the order."""
    return CheckoutRequest(order_id, 31_500, "INR", payment_method=method, capture_manually=True)


async def test_payments_since_a_time_are_listed_with_what_was_captured_and_refunded(
    system: StripeSystem,
) -> None:
    gateway = StripeGateway(STRIPE_TEST_KEY, api_base=system.localstripe.url)
    since = datetime.now(UTC) - timedelta(seconds=2)
    order_id = new_order_id()
    checkout = await asyncio.to_thread(
        gateway.create_checkout, _checkout(order_id, card(system, GOOD_CARD))
    )
    fetched = await asyncio.to_thread(gateway.fetch, checkout.payment_id)
    assert fetched is not None and (fetched.status, fetched.captured) == ("requires_capture", 0)
    assert await asyncio.to_thread(gateway.fetch, "pi_does_not_exist") is None
    foreign = GatewayRequest(order_id, PaymentKind.REFUND, 100, 1, "k", "INR", "pay_razorpay1")
    answer = await asyncio.to_thread(gateway.refund, foreign)  # not Stripe's: refunds nothing
    assert not answer.succeeded and "'pay_razorpay1'" in answer.detail
    system.stripe.v1.payment_intents.capture(checkout.payment_id)
    listed = {p.payment_id: p for p in await asyncio.to_thread(gateway.list_payments, since)}
    mine = listed[checkout.payment_id]
    assert (mine.order_id, mine.captured, mine.refunded, mine.currency) == (
        order_id,
        31_500,
        0,
        "INR",
    )


async def test_a_rate_limit_or_a_stripe_outage_is_retried_and_a_refused_key_is_not(
    system: StripeSystem,
) -> None:
    proxy = StallingProxy(system.localstripe.url, stall_suffix="/capture", stall=0).start()
    try:
        gateway = StripeGateway(STRIPE_TEST_KEY, api_base=proxy.url, timeout=5)
        order_id = new_order_id()
        checkout = await asyncio.to_thread(
            gateway.create_checkout, _checkout(order_id, card(system, GOOD_CARD))
        )
        capture = GatewayRequest(
            order_id, PaymentKind.CAPTURE, 31_500, 1, f"{order_id}-k", "INR", checkout.payment_id
        )
        proxy.refuse = [429, 500, 503]
        for _ in range(3):
            with pytest.raises(GatewayUnavailableError) as unavailable:
                await asyncio.to_thread(gateway.capture, capture)
            assert order_id in str(unavailable.value)
        assert (await asyncio.to_thread(gateway.capture, capture)).succeeded
        assert proxy.keys("/capture") == [f"{order_id}-k"] * 4

        refused = StripeGateway("pk_not_a_secret_key", api_base=system.localstripe.url)
        with pytest.raises(GatewayConfigError):  # our key, not the card: no retry helps
            await asyncio.to_thread(refused.capture, capture)
    finally:
        proxy.stop()


def test_a_capture_attempt_after_one_whose_charge_landed_unseen_does_not_charge_the_card_again(
    localstripe: LocalStripe,
) -> None:
    """Attempt 1 made and captured a new PaymentIntent but every answer was lost (the attempt
    failed as a gateway error); attempt 2, with its own key, must find that payment, not charge
    the customer's saved card a second time."""
    client = stripe.StripeClient(
        STRIPE_TEST_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0
    )

    def saved_card(number: str, customer: str) -> str:
        method = client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"},
            }
        ).id
        client.v1.payment_methods.attach(method, params={"customer": customer})
        client.v1.customers.update(
            customer, params={"invoice_settings": {"default_payment_method": method}}
        )
        return method

    order_id = new_order_id()
    customer = client.v1.customers.create(params={"email": f"{order_id}@example.com"}).id
    direct = StripeGateway(STRIPE_TEST_KEY, api_base=localstripe.url)
    failed = client.v1.payment_intents.create(
        params={
            "amount": 45_000, "currency": "inr", "customer": customer,
            "payment_method": saved_card(DECLINED_CARD, customer),
            "capture_method": "manual", "metadata": {"order_id": order_id},
        }
    )  # fmt: skip
    with pytest.raises(stripe.CardError):  # the checkout's card is declined
        client.v1.payment_intents.confirm(failed.id)
    saved_card(GOOD_CARD, customer)  # the customer's new card

    def attempt(n: int) -> GatewayRequest:
        key = gateway_idempotency_key(order_id, PaymentKind.CAPTURE, n, failed.id)
        return GatewayRequest(order_id, PaymentKind.CAPTURE, 45_000, n, key, "INR", failed.id)

    proxy = StallingProxy(localstripe.url, stall_suffix="/capture").start()
    try:
        lost = StripeGateway(STRIPE_TEST_KEY, api_base=proxy.url, timeout=1.0)
        with pytest.raises(GatewayUnavailableError):
            lost.capture(attempt(1))  # Stripe captured; the answer never came
    finally:
        proxy.release.set()
        proxy.stop()
    answer = direct.capture(attempt(2))
    assert answer.succeeded, answer.detail
    charges = client.v1.charges.list(params={"customer": customer, "limit": 100}).data
    captured = [(c.amount, c.payment_intent) for c in charges if c.captured]
    assert captured == [(45_000, answer.payment_id)]  # charged once


def test_a_second_checkout_of_an_order_with_another_card_is_not_refused_as_a_reused_key(
    localstripe: LocalStripe,
) -> None:
    """Stripe refuses a key sent again with other parameters (idempotency_error) and answers a
    repeat with the first result for 24 hours: a checkout's key is its order and its request."""
    client = stripe.StripeClient(
        STRIPE_TEST_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0
    )

    def method() -> str:
        return client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": GOOD_CARD, "exp_month": 12, "exp_year": 2031, "cvc": "123"},
            }
        ).id

    proxy = StallingProxy(localstripe.url, stall_suffix="/none", stall=0).start()
    try:
        gateway = StripeGateway(STRIPE_TEST_KEY, api_base=proxy.url)
        order_id = new_order_id()
        first, second = method(), method()
        gateway.create_checkout(CheckoutRequest(order_id, 31_500, "INR"))  # the storefront's
        gateway.create_checkout(CheckoutRequest(order_id, 31_500, "INR"))  # a double click
        gateway.create_checkout(CheckoutRequest(order_id, 31_500, "INR", payment_method=first))
        gateway.create_checkout(CheckoutRequest(order_id, 31_500, "INR", payment_method=second))
        keys = proxy.keys("/v1/payment_intents")
    finally:
        proxy.stop()
    assert len(keys) == 4 and all(order_id in k for k in keys)
    assert keys[0] == keys[1]  # the same request: the same PaymentIntent
    assert len({keys[1], keys[2], keys[3]}) == 3  # another card: its own PaymentIntent


def test_an_authorisation_above_the_order_total_captures_the_total_not_the_authorisation(
    localstripe: LocalStripe,
) -> None:
    client = stripe.StripeClient(
        STRIPE_TEST_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0
    )
    method = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": GOOD_CARD, "exp_month": 12, "exp_year": 2031, "cvc": "123"},
        }
    ).id
    gateway = StripeGateway(STRIPE_TEST_KEY, api_base=localstripe.url)
    order_id = new_order_id()
    held = gateway.create_checkout(
        CheckoutRequest(order_id, 50_000, "INR", payment_method=method, capture_manually=True)
    )
    assert held.status == "requires_capture"
    key = gateway_idempotency_key(order_id, PaymentKind.CAPTURE, 1, held.payment_id)
    answer = gateway.capture(
        GatewayRequest(order_id, PaymentKind.CAPTURE, 31_500, 1, key, "INR", held.payment_id)
    )
    assert answer.succeeded, answer.detail
    intent = client.v1.payment_intents.retrieve(held.payment_id)
    latest = intent.latest_charge
    charge = client.v1.charges.retrieve(latest if isinstance(latest, str) else latest.id)
    # the order's total; the rest of the hold is let go (localstripe shows it as refunded)
    assert charge.amount - charge.amount_refunded == 31_500


# --- manual capture and legacy charges (events localstripe does not send are posted signed) ---


async def post_event(system: StripeSystem, etype: str, obj: dict[str, Any]) -> str:
    """POST a Stripe event about `obj` to the HTTP app, signed as Stripe signs (the endpoint's
    secret): for the events localstripe never sends. Returns the event id."""
    event_id = f"evt_test_{uuid.uuid4().hex[:16]}"
    body = json.dumps({"id": event_id, "object": "event", "type": etype,
                       "created": int(time.time()), "data": {"object": obj}}).encode()  # fmt: skip
    url = f"http://127.0.0.1:{system.settings.http_port}/webhooks/stripe"
    headers = {"Stripe-Signature": sign_stripe(body, system.settings.stripe_webhook_secret)}
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return event_id


async def authorise(system: StripeSystem, intent_id: str) -> str:
    """What Stripe sends once a manual-capture PaymentIntent is confirmed: the intent, now
    `requires_capture` with `amount_capturable` (localstripe sends no event and has no such
    field: the intent is read from localstripe and the field added as Stripe's API has it)."""
    intent = system.stripe.v1.payment_intents.retrieve(intent_id)
    assert intent.status == "requires_capture"
    obj = intent.to_dict()
    obj.setdefault("amount_capturable", intent.amount)
    return await post_event(system, "payment_intent.amount_capturable_updated", obj)


def event_row(engine: Engine, event_id: str) -> WebhookEvent | None:
    with Session(engine) as session:
        return session.exec(select(WebhookEvent).where(WebhookEvent.event_id == event_id)).first()


async def test_a_manual_capture_checkout_is_captured_for_the_total_once_and_confirms_the_order(
    system: StripeSystem, catalogue: Catalogue, engine: Engine
) -> None:
    skus = catalogue(item=(31_500, 5))
    order = await pending_order(system.orders, [(skus["item"], 2)])
    checkout = await system.orders.create_checkout(order.id, capture_manually=True)
    system.stripe.v1.payment_intents.update(
        checkout.payment_id, params={"payment_method": card(system, GOOD_CARD)}
    )
    system.stripe.v1.payment_intents.confirm(checkout.payment_id)  # the customer authorises
    await authorise(system, checkout.payment_id)

    state = await wait_status(system.orders, order.id, "CONFIRMED")
    assert state.payment_id == checkout.payment_id
    intent = system.stripe.v1.payment_intents.retrieve(checkout.payment_id)
    assert intent.status == "succeeded"
    charge = system.stripe.v1.charges.retrieve(_id(intent.latest_charge))
    assert (charge.amount, charge.captured, charge.amount_refunded) == (63_000, True, 0)
    with Session(engine) as session:
        [row] = session.exec(select(Payment).where(Payment.order_id == order.id)).all()
    assert (row.kind, row.status, row.amount, row.payment_id) == (
        "capture", "succeeded", 63_000, checkout.payment_id)  # fmt: skip
    # the key is the order, kind, payment and attempt: a retried activity sends it again
    assert row.detail == gateway_idempotency_key(
        order.id, PaymentKind.CAPTURE, 1, checkout.payment_id, held=True
    )

    # Stripe's payment_intent.succeeded of our own capture is the same payment, not a second
    async def succeeded_applied() -> bool:
        with Session(engine) as session:
            rows = session.exec(
                select(WebhookEvent).where(
                    WebhookEvent.payment_id == checkout.payment_id,
                    WebhookEvent.type == "payment_intent.succeeded",
                )
            ).all()
        return any(r.status == "APPLIED" for r in rows)

    await eventually(succeeded_applied, 20, "localstripe's payment_intent.succeeded applied")
    assert payments(engine, order.id) == [("capture", "succeeded", 63_000)]


async def test_an_authorisation_below_the_total_is_not_captured_and_the_order_is_not_confirmed(
    system: StripeSystem, catalogue: Catalogue, engine: Engine
) -> None:
    skus = catalogue(item=(31_500, 5))
    order = await pending_order(system.orders, [(skus["item"], 1)])
    short = system.stripe.v1.payment_intents.create(
        params={
            "amount": 30_000, "currency": "inr", "payment_method": card(system, GOOD_CARD),
            "capture_method": "manual", "confirm": True, "metadata": {"order_id": order.id},
        }
    )  # fmt: skip
    event_id = await authorise(system, short.id)

    async def refused() -> WebhookEvent | None:
        row = event_row(engine, event_id)
        return row if row is not None and row.status == "UNAPPLIED" else None

    row = await eventually(refused, 20, "the short authorisation refused")
    assert order.id in row.detail and short.id in row.detail
    assert "₹300.00" in row.detail and "₹315.00" in row.detail
    # not captured: the hold is let go at once, the order waits for a payment of its total
    released = system.stripe.v1.payment_intents.retrieve(short.id)
    assert released.status == "canceled"
    charge = system.stripe.v1.charges.retrieve(_id(released.latest_charge))
    assert not charge.captured
    state = await system.orders.status(order.id)
    assert state.status == "PENDING_PAYMENT" and state.payment_id == ""
    assert payments(engine, order.id) == []

    # the customer then pays the total: that payment is taken as usual
    checkout = await system.orders.create_checkout(order.id, payment_method=card(system, GOOD_CARD))
    assert checkout.status == "succeeded"
    state = await wait_status(system.orders, order.id, "CONFIRMED")
    assert state.payment_id == checkout.payment_id


async def test_a_manual_capture_order_cancelled_before_capture_releases_the_hold_not_refunds(
    system: StripeSystem, catalogue: Catalogue, engine: Engine
) -> None:
    """Above the high-value threshold the order is reviewed before the money is taken; a cancel
    during the review cancels the PaymentIntent (the hold is released): nothing to refund."""
    skus = catalogue(item=(6_000_000, 5))  # ₹60,000: above the ₹50,000 review threshold
    order = await pending_order(system.orders, [(skus["item"], 1)])
    checkout = await system.orders.create_checkout(
        order.id, payment_method=card(system, GOOD_CARD), capture_manually=True
    )
    assert checkout.status == "requires_capture"
    await authorise(system, checkout.payment_id)
    await wait_status(system.orders, order.id, "IN_REVIEW")
    assert system.stripe.v1.payment_intents.retrieve(checkout.payment_id).status == (
        "requires_capture"
    )  # reviewed before capture

    await system.orders.cancel(order.id, "customer changed their mind")
    state = await wait_status(system.orders, order.id, "CANCELLED")
    intent = system.stripe.v1.payment_intents.retrieve(checkout.payment_id)
    assert intent.status == "canceled"
    charge = system.stripe.v1.charges.retrieve(_id(intent.latest_charge))
    assert not charge.captured
    assert system.stripe.v1.refunds.list(params={"charge": charge.id}).data == []
    assert payments(engine, order.id) == []  # no money moved, none recorded
    assert any(f"released {checkout.payment_id}" in h.note for h in state.history)


async def test_a_payment_under_a_bare_charge_id_is_refunded_through_the_charges_api(
    system: StripeSystem, catalogue: Catalogue, engine: Engine
) -> None:
    """A legacy Charges API payment has no PaymentIntent: its refund names the charge."""
    skus = catalogue(item=(12_300, 5))
    order = await pending_order(system.orders, [(skus["item"], 1)])
    charge = system.stripe.v1.charges.create(
        params={
            "amount": 12_300,
            "currency": "inr",
            "source": card(system, GOOD_CARD),
            "metadata": {"order_id": order.id},
        }
    )
    assert charge.id.startswith("ch_") and not charge.payment_intent and charge.captured
    await post_event(system, "charge.succeeded", charge.to_dict())  # localstripe sends none
    await wait_status(system.orders, order.id, "CONFIRMED")

    await system.orders.cancel(order.id, "customer changed their mind")
    state = await wait_status(system.orders, order.id, "CANCELLED", timeout=30)
    refunds = system.stripe.v1.refunds.list(params={"charge": charge.id}).data
    assert [(r.amount, r.status) for r in refunds] == [(12_300, "succeeded")]
    assert payments(engine, order.id) == [
        ("capture", "succeeded", 12_300),
        ("refund", "succeeded", 12_300),
    ]
    assert state.history[-1].note.endswith(f"refunded {refunds[0].id}")


def _id(value: Any) -> str:
    return value if isinstance(value, str) else str(value.id)


async def test_an_authorisation_of_the_failed_intent_during_its_retries_is_captured_at_once(
    system: StripeSystem, catalogue: Catalogue, engine: Engine
) -> None:
    """The checkout's confirmation fails and the retries start (their first attempt declines:
    the intent waits for the customer); the customer then confirms the same PaymentIntent
    (manual capture). The order captures that hold with keys of its own: the retries' decline
    under the same intent is not replayed as the capture's answer."""
    skus = catalogue(item=(42_000, 5))
    policy = dataclasses.replace(
        policy_from_settings(system.settings),
        payment_retry_attempts=3,
        payment_retry_interval_seconds=30.0,  # the retries' next attempt is well after the hold
    )
    order = await pending_order(system.orders, [(skus["item"], 1)], policy=policy)
    intent = system.stripe.v1.payment_intents.create(
        params={
            "amount": 42_000, "currency": "inr", "payment_method": card(system, GOOD_CARD),
            "capture_method": "manual", "metadata": {"order_id": order.id},
        }
    )  # fmt: skip
    # Stripe's payment_intent.payment_failed of the first confirmation (3-D Secure failed,
    # say; localstripe cannot fail and confirm one intent again, so it is posted signed)
    failed = intent.to_dict()
    failed["last_payment_error"] = {"message": "authentication failed"}
    await post_event(system, "payment_intent.payment_failed", failed)
    await wait_status(system.orders, order.id, "PAYMENT_RETRYING")
    retry = system.env.client.get_workflow_handle_for(
        PaymentRetryWorkflow.run, payment_retry_workflow_id(order.id, PaymentKind.CAPTURE)
    )

    async def declined_once() -> bool:
        try:
            attempts = await retry.query(PaymentRetryWorkflow.attempts)
        except Exception:  # not started yet
            return False
        return len(attempts) == 1 and not attempts[0].succeeded

    await eventually(declined_once, 20, "the first capture retry declined")
    system.stripe.v1.payment_intents.confirm(intent.id)  # the customer authorises it now
    await authorise(system, intent.id)

    state = await wait_status(system.orders, order.id, "CONFIRMED", timeout=20)
    assert state.payment_id == intent.id
    capture = await system.env.client.get_workflow_handle_for(
        PaymentRetryWorkflow.run, payment_retry_workflow_id(order.id, PaymentKind.CAPTURE)
    ).result()
    assert [(a.succeeded, a.payment_id) for a in capture.attempts] == [(True, intent.id)]
    assert system.stripe.v1.payment_intents.retrieve(intent.id).status == "succeeded"
    assert payments(engine, order.id)[-1] == ("capture", "succeeded", 42_000)


# --- refunds whose answer or row is lost (issue 18 hole 2) ---


def refunds_at_stripe(system: StripeSystem, payment_intent: str) -> list[tuple[str, int, str]]:
    """(id, amount, status) of every refund localstripe holds for the PaymentIntent."""
    found = system.stripe.v1.refunds.list(params={"payment_intent": payment_intent}).data
    return [(r.id, r.amount, r.status) for r in found]


async def test_a_refund_the_webhook_records_before_the_activity_commits_is_paid_once_and_cancels(
    system: StripeSystem, catalogue: Catalogue, engine: Engine
) -> None:
    """The refund lands at Stripe, its answer is late, and meanwhile the webhook worker records
    it from `charge.refunded`: the activity's own row then conflicts with the webhook's."""
    skus = catalogue(item=(59_900, 5))
    order = await pending_order(system.orders, [(skus["item"], 1)])
    checkout = await system.orders.create_checkout(order.id, payment_method=card(system, GOOD_CARD))
    await wait_status(system.orders, order.id, "CONFIRMED")
    proxy = system.proxy
    proxy.release.clear()
    proxy.stall_suffix, proxy.stall_method, proxy.deliver, proxy.stall = (
        "/v1/refunds",
        "POST",
        True,
        1,
    )
    try:
        await system.orders.cancel(order.id, "customer changed their mind")

        async def refunded() -> list[tuple[str, int, str]]:
            return refunds_at_stripe(system, checkout.payment_id)

        [(refund_id, _, _)] = await eventually(refunded, 20, "the refund made at localstripe")
        intent = system.stripe.v1.payment_intents.retrieve(checkout.payment_id)
        charge = system.stripe.v1.charges.retrieve(_id(intent.latest_charge))
        await post_event(system, "charge.refunded", charge.to_dict())  # localstripe sends none

        async def recorded() -> bool:
            return ("refund", "succeeded", 59_900) in payments(engine, order.id)

        await eventually(recorded, 20, "the webhook's refund row")
    finally:
        proxy.release.set()  # the activity's answer arrives after the webhook's row
    state = await wait_status(system.orders, order.id, "CANCELLED", timeout=30)
    assert refunds_at_stripe(system, checkout.payment_id) == [(refund_id, 59_900, "succeeded")]
    assert payments(engine, order.id) == [
        ("capture", "succeeded", 59_900),
        ("refund", "succeeded", 59_900),
    ]
    assert any(f"refunded {refund_id}" in h.note for h in state.history)


async def test_a_refund_attempt_after_one_whose_answer_was_lost_finds_it_and_pays_nothing_more(
    system: StripeSystem, engine: Engine
) -> None:
    """Every try of attempt 1 reached Stripe and lost its answer (the attempt failed as a gateway
    error); attempt 2, with its own key, must find that refund, not pay the customer again."""
    direct = StripeGateway(STRIPE_TEST_KEY, api_base=system.localstripe.url)
    order_id = new_order_id()
    paid = await asyncio.to_thread(
        direct.create_checkout,
        CheckoutRequest(order_id, 50_000, "INR", payment_method=card(system, GOOD_CARD)),
    )
    assert paid.status == "succeeded"

    def attempt(n: int) -> GatewayRequest:
        key = gateway_idempotency_key(order_id, PaymentKind.REFUND, n, paid.payment_id)
        return GatewayRequest(order_id, PaymentKind.REFUND, 20_000, n, key, "INR", paid.payment_id)

    proxy = StallingProxy(
        system.localstripe.url, stall_suffix="/v1/refunds", stall_method="POST"
    ).start()
    try:
        lost = StripeGateway(STRIPE_TEST_KEY, api_base=proxy.url, timeout=1.0)
        with pytest.raises(GatewayUnavailableError):  # its last try: Stripe refunded, no answer
            await asyncio.to_thread(PaymentActivities(engine, lost).call_gateway, attempt(1))
    finally:
        proxy.release.set()
        proxy.stop()
    answer = await asyncio.to_thread(PaymentActivities(engine, direct).call_gateway, attempt(2))
    assert answer.succeeded, answer.detail
    assert refunds_at_stripe(system, paid.payment_id) == [(answer.payment_id, 20_000, "succeeded")]
    assert payments(engine, order_id) == [("refund", "succeeded", 20_000)]


# --- refunds that end later, or slowly (issue 18 hole 11) ---


@pytest.mark.parametrize("etype", ["refund.failed", "charge.refund.updated"])
async def test_a_refund_that_fails_after_the_order_was_cancelled_makes_it_refund_failed(
    system: StripeSystem, catalogue: Catalogue, engine: Engine, redis_url: str, etype: str
) -> None:
    skus = catalogue(item=(24_900, 5))
    order = await pending_order(system.orders, [(skus["item"], 1)])
    checkout = await system.orders.create_checkout(order.id, payment_method=card(system, GOOD_CARD))
    await wait_status(system.orders, order.id, "CONFIRMED")
    await system.orders.cancel(order.id, "customer changed their mind")
    await wait_status(system.orders, order.id, "CANCELLED")
    [(refund_id, _, _)] = refunds_at_stripe(system, checkout.payment_id)

    # days later the card's bank sends the money back to Stripe (localstripe sends no such event)
    failed = system.stripe.v1.refunds.retrieve(refund_id).to_dict()
    failed.update(status="failed", failure_reason="expired_or_canceled_card")
    event_id = await post_event(system, etype, failed)

    async def unapplied() -> WebhookEvent | None:
        row = event_row(engine, event_id)
        return row if row is not None and row.status == "UNAPPLIED" else None

    row = await eventually(unapplied, 20, f"the {etype} event put to an operator")
    assert refund_id in row.detail and order.id in row.detail
    assert "expired_or_canceled_card" in row.detail and "₹249.00" in row.detail
    with Session(engine) as session:
        refund = session.exec(select(Payment).where(Payment.payment_id == refund_id)).one()
        placed = session.get(Order, order.id)
    assert refund.status == "failed" and "expired_or_canceled_card" in refund.detail
    assert placed is not None and placed.status == "REFUND_FAILED"  # /ops shows it so
    admin = QueueAdmin(system.spec, redis_url)
    try:
        dead = [d for d in await admin.dead_letters() if d.id == f"stripe-{event_id}"]
    finally:
        await admin.close()
    assert dead and refund_id in dead[0].failed_reason  # `orderflow queues dlq` lists it


async def test_a_refund_that_needs_the_customers_action_is_not_refunded_again_by_the_next_attempt(
    system: StripeSystem, engine: Engine
) -> None:
    """Stripe answers `requires_action` (the customer must give bank details, say): money may
    still move, so the next attempt must not start a second refund."""
    direct = StripeGateway(STRIPE_TEST_KEY, api_base=system.localstripe.url)
    order_id = new_order_id()
    paid = await asyncio.to_thread(
        direct.create_checkout,
        CheckoutRequest(order_id, 40_000, "INR", payment_method=card(system, GOOD_CARD)),
    )
    proxy = StallingProxy(system.localstripe.url, stall=0).start()

    def waiting(method: str, path: str, body: bytes) -> bytes:  # localstripe never waits
        if not path.startswith("/v1/refunds"):
            return body
        return body.replace(b'"status": "succeeded"', b'"status": "requires_action"')

    proxy.rewrite = waiting
    queue = f"payments-refund-action-{order_id}"
    try:
        gateway = StripeGateway(STRIPE_TEST_KEY, api_base=proxy.url)
        async with Worker(
            system.env.client,
            task_queue=queue,
            workflows=[PaymentRetryWorkflow],
            activities=[PaymentActivities(engine, gateway).call_gateway],
            activity_executor=ThreadPoolExecutor(max_workers=2),
        ):
            result = await system.env.client.execute_workflow(
                PaymentRetryWorkflow.run,
                PaymentRetryInput(
                    order_id=order_id,
                    kind=PaymentKind.REFUND,
                    amount=15_000,
                    attempts=2,
                    interval_seconds=0.5,
                    currency="INR",
                    payment_id=paid.payment_id,
                ),
                id=f"refund-action-{order_id}",
                task_queue=queue,
            )
    finally:
        proxy.stop()
    assert [(r[1], r[2]) for r in refunds_at_stripe(system, paid.payment_id)] == [
        (15_000, "succeeded")
    ]
    assert result.succeeded, result.attempts
    assert "requires_action" in result.attempts[-1].detail


class _NoOrders:
    """The webhook worker's order client for refund events (they never reach an order)."""

    async def payment_received(self, order_id: str, payment: Any) -> Any:
        raise AssertionError(f"no payment expected for order {order_id}")

    async def payment_failed(self, order_id: str, failure: Any) -> None:
        raise AssertionError(f"no failure expected for order {order_id}")


async def test_a_cumulative_charge_refunded_before_the_activitys_row_records_the_refund_once(
    system: StripeSystem, engine: Engine
) -> None:
    """An operator refunded ₹300 (recorded from its event); our refund of ₹200 lands, and
    Stripe's `charge.refunded` without the refunds list (`amount_refunded` 50,000, the running
    total) is processed before the activity's own row: one row per refund, by its own id."""
    direct = StripeGateway(STRIPE_TEST_KEY, api_base=system.localstripe.url)
    processor = WebhookProcessor(_NoOrders(), engine, gateway=direct)  # type: ignore[arg-type]
    order_id = new_order_id()
    paid = await asyncio.to_thread(
        direct.create_checkout,
        CheckoutRequest(order_id, 100_000, "INR", payment_method=card(system, GOOD_CARD)),
    )
    intent = system.stripe.v1.payment_intents.retrieve(paid.payment_id)
    charge_id = _id(intent.latest_charge)

    async def charge_refunded(listed: bool) -> None:
        charge = system.stripe.v1.charges.retrieve(charge_id).to_dict()
        charge["metadata"] = {"order_id": order_id}
        if not listed:
            charge.pop("refunds", None)  # newer API versions leave the list out
        body = json.dumps(stripe_event("charge.refunded", charge)).encode()
        await processor.apply(parse_stripe(body))

    system.stripe.v1.refunds.create(params={"payment_intent": paid.payment_id, "amount": 30_000})
    await charge_refunded(listed=True)

    proxy = StallingProxy(
        system.localstripe.url, stall_suffix="/v1/refunds", stall_method="POST", deliver=True
    ).start()
    try:
        late = PaymentActivities(engine, StripeGateway(STRIPE_TEST_KEY, api_base=proxy.url))
        key = gateway_idempotency_key(order_id, PaymentKind.REFUND, 1, paid.payment_id)
        request = GatewayRequest(
            order_id, PaymentKind.REFUND, 20_000, 1, key, "INR", paid.payment_id
        )
        ours = asyncio.create_task(asyncio.to_thread(late.call_gateway, request))

        async def landed() -> bool:
            return len(refunds_at_stripe(system, paid.payment_id)) == 2

        await eventually(landed, 20, "our refund at localstripe")
        await charge_refunded(listed=False)  # before the activity's commit
        proxy.release.set()
        answer = await ours
    finally:
        proxy.release.set()
        proxy.stop()
    assert answer.succeeded, answer.detail
    await charge_refunded(listed=True)  # a later delivery listing both changes nothing
    at_stripe = sorted((r[0], r[1]) for r in refunds_at_stripe(system, paid.payment_id))
    with Session(engine) as session:
        rows = session.exec(
            select(Payment).where(Payment.order_id == order_id, Payment.kind == "refund")
        ).all()
    assert sorted((r.payment_id, r.amount) for r in rows) == at_stripe
