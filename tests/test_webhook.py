"""The payment webhook worker against the real workflows, database, Redis and SMTP sink."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import stripe
from bullmq import UnrecoverableError
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.service import RetryConfig
from temporalio.testing import WorkflowEnvironment

from app import embedded
from app.client import OrderClient
from app.smtp_sink import SmtpSink
from app.web.app import create_app
from bridge.dlq import DeadLetterQueue
from bridge.errors import RetryLater
from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.redis_client import RedisClient
from bridge.specs import QueueSpec
from orderflow.contracts.mail import EMAIL_QUEUE
from orderflow.db import Payment, WebhookEvent
from orderflow.settings import Settings
from payments.events import GatewayEvent
from payments.processor import WebhookProcessor
from payments.providers import sample_event, signed_headers
from payments.providers.razorpay import (
    parse_razorpay,
    razorpay_payment_captured,
    razorpay_refund_processed,
)
from payments.providers.stripe import (
    parse_stripe,
    stripe_charge_refunded,
    stripe_event,
    stripe_payment_failed,
    stripe_payment_intent,
    stripe_payment_succeeded,
)
from payments.reconciliation import enqueue_reconciliation, reconcile
from payments.stripe_gateway import StripeGateway
from payments.webhook_errors import OrderNotYetKnownError, WebhookEventError
from tests.bridge_helpers import bull_queue, counts, eventually, running
from tests.fake_gateways import STRIPE_TEST_KEY, LocalStripe, StallingProxy
from tests.helpers import event_row, luhn_number, payments, pending_order, wait_status
from tests.unit.conftest import Stubs, stub_worker, unit_client
from workers.bridge import run_bridge_workers
from workers.queues import build_webhook_processor, email_spec, webhook_spec

Catalogue = Callable[..., dict[str, str]]


@pytest.fixture
def processor(orders: OrderClient, engine: Engine) -> WebhookProcessor:
    return WebhookProcessor(orders, engine)


def webhook_test_spec(settings: Settings, **changes: object) -> QueueSpec:
    """The webhook spec under a queue name and prefix of this test's own."""
    tag = uuid.uuid4().hex[:10]
    return webhook_spec(settings).with_(prefix=f"t{tag}", name=f"webhook-{tag}", **changes)


async def place(orders: OrderClient, catalogue: Catalogue, price: int = 129_900) -> str:
    """A fresh order of one item at `price`, waiting for payment."""
    skus = catalogue(item=(price, 5))
    return (await pending_order(orders, [(skus["item"], 1)], customer_id="cust-wh")).id


async def test_stripe_payment_confirms_the_order_once(
    processor: WebhookProcessor, orders: OrderClient, catalogue: Catalogue, engine: Engine
) -> None:
    order_id = await place(orders, catalogue)
    body = stripe_payment_succeeded(order_id, 129900, event_id=f"evt_{order_id}")
    event = parse_stripe(body)
    result = await processor.apply(event)
    assert result["status"] == "applied" and result["order_id"] == order_id
    state = await wait_status(orders, order_id, "CONFIRMED")
    assert state.payment_id == event.payment_id
    assert payments(engine, order_id) == [("capture", "succeeded", 129_900)]

    assert (await processor.apply(event))["status"] == "duplicate"
    # Stripe also sends charge.succeeded for the same PaymentIntent: the same payment, once
    charge = {
        "id": "ch_x",
        "object": "charge",
        "amount": 129900,
        "amount_captured": 129900,
        "currency": "inr",
        "payment_intent": event.payment_id,
        "metadata": {"order_id": order_id},
    }
    twin = parse_stripe(json.dumps(stripe_event("charge.succeeded", charge)).encode())
    assert (await processor.apply(twin))["status"] == "applied"
    assert payments(engine, order_id) == [("capture", "succeeded", 129_900)]
    row = event_row(engine, "stripe", event.event_id)
    assert (row.status, row.order_id, row.amount, row.currency) == (
        "APPLIED",
        order_id,
        129_900,
        "INR",
    )


async def test_razorpay_capture_then_refund_is_recorded(
    processor: WebhookProcessor, orders: OrderClient, catalogue: Catalogue, engine: Engine
) -> None:
    order_id = await place(orders, catalogue, price=50_000)
    pay_id = f"pay_{order_id}"
    captured = parse_razorpay(razorpay_payment_captured(order_id, 50000, payment_id=pay_id), "e1")
    await processor.apply(captured)
    await wait_status(orders, order_id, "CONFIRMED")
    # Razorpay's refund notes need not carry the order id: it is found by the payment id
    refund = parse_razorpay(razorpay_refund_processed(pay_id, 20000), f"rf-{order_id}")
    result = await processor.apply(refund)
    assert result["status"] == "applied" and result["order_id"] == order_id
    assert payments(engine, order_id) == [
        ("capture", "succeeded", 50_000),
        ("refund", "succeeded", 20_000),
    ]
    assert (await processor.apply(refund))["status"] == "duplicate"
    assert len(payments(engine, order_id)) == 2


async def test_unknown_order_fails_unrecoverably_naming_event_and_order(
    processor: WebhookProcessor, engine: Engine
) -> None:
    event = parse_stripe(stripe_payment_succeeded("no-such-order", 1000, event_id="evt_unknown_1"))
    with pytest.raises(WebhookEventError) as info:
        await processor.apply(event)
    assert isinstance(info.value, UnrecoverableError)
    assert "evt_unknown_1" in str(info.value) and "no-such-order" in str(info.value)
    assert "unknown order" in str(info.value)
    assert event_row(engine, "stripe", "evt_unknown_1").status == "REJECTED"


@pytest.mark.parametrize(
    ("obj_changes", "problem"),
    [
        ({"metadata": {}}, "no order_id in data.object.metadata"),
        ({"id": None}, "no payment id"),
    ],
)
async def test_malformed_events_fail_unrecoverably(
    processor: WebhookProcessor, engine: Engine, obj_changes: dict[str, object], problem: str
) -> None:
    event_id = f"evt_bad_{uuid.uuid4().hex[:8]}"
    obj = {**stripe_payment_intent("o-bad", 1000), **obj_changes}
    event = parse_stripe(
        json.dumps(stripe_event("payment_intent.succeeded", obj, event_id=event_id)).encode()
    )
    with pytest.raises(WebhookEventError, match=problem) as info:
        await processor.apply(event)
    assert event_id in str(info.value)
    assert event_row(engine, "stripe", event_id).status == "REJECTED"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"amount_minor": "12.50"}, "amount '12.50' is not"),
        ({"amount_minor": -5}, "amount -5 is not"),
        pytest.param({"amount_minor": 10**30}, f"amount {10**30} is not"),
        pytest.param({"amount_minor": 2**63}, f"amount {2**63} is not"),
        pytest.param({"currency": ""}, "currency is empty"),
        pytest.param({"currency": "rupees"}, "currency 'rupees' is not"),
    ],
)
async def test_job_data_with_an_impossible_amount_or_currency_is_recorded_and_rejected(
    processor: WebhookProcessor, engine: Engine, changes: dict[str, object], problem: str
) -> None:
    """Job data from elsewhere (a Node producer, an older ingress) is checked by the worker."""
    event_id = f"evt_odd_{uuid.uuid4().hex[:8]}"
    data = parse_stripe(stripe_payment_succeeded("o-odd", 1000, event_id=event_id)).to_job()
    event = GatewayEvent.from_job({**data, **changes})
    with pytest.raises(WebhookEventError, match=problem) as info:
        await processor.apply(event)
    assert event_id in str(info.value) and "o-odd" in str(info.value)
    row = event_row(engine, "stripe", event_id)
    assert row.status == "REJECTED" and problem in row.detail


async def test_a_job_with_an_amount_past_64_bits_is_dead_lettered_once_with_its_reason(
    settings: Settings, engine: Engine, orders: OrderClient, redis_url: str
) -> None:
    spec = webhook_test_spec(settings, attempts=5, backoff={"type": "fixed", "delay": 10})
    producer = QueueProducer.connect(spec, redis_url)
    event_id = f"evt_huge_{uuid.uuid4().hex[:8]}"
    data = parse_stripe(stripe_payment_succeeded("o-huge", 1000, event_id=event_id)).to_job()
    await producer.add("stripe-webhook", {**data, "amount_minor": 10**30}, {"jobId": event_id})
    client = RedisClient(redis_url)
    dlq = DeadLetterQueue(spec, client)
    async with running(spec, WebhookProcessor(orders, engine, queue=spec.name), redis_url):
        await eventually(lambda: _dlq_has(dlq, 1))
    [entry] = await dlq.list()
    assert entry.attempts_made == 1 and entry.unrecoverable  # refused, not retried 5 times
    assert event_id in entry.failed_reason and str(10**30) in entry.failed_reason
    assert "too large to convert" not in entry.failed_reason
    row = event_row(engine, "stripe", event_id)
    assert (row.status, row.amount) == ("REJECTED", 0) and str(10**30) in row.detail
    await producer.close()
    await client.close()


async def test_payment_for_a_cancelled_order_is_recorded_and_fails_loudly(
    processor: WebhookProcessor, orders: OrderClient, catalogue: Catalogue, engine: Engine
) -> None:
    order_id = await place(orders, catalogue)
    await orders.cancel(order_id, "changed my mind")
    await wait_status(orders, order_id, "CANCELLED")
    event = parse_stripe(stripe_payment_succeeded(order_id, 129900))
    with pytest.raises(WebhookEventError) as info:
        await processor.apply(event)
    message = str(info.value)
    assert event.event_id in message and order_id in message and "not applied" in message
    assert "₹1,299.00" in message
    row = event_row(engine, "stripe", event.event_id)
    assert row.status == "UNAPPLIED" and row.payment_id == event.payment_id
    report = reconcile(engine, window_hours=1)
    [found] = [m for m in report["mismatches"] if m["order_id"] == order_id]
    assert found["kind"] == "payment_not_applied" and found["payment_id"] == event.payment_id

    # once the operator refunds it at the gateway, reconciliation is satisfied
    refund = parse_stripe(stripe_charge_refunded(event.payment_id, 129900))
    assert (await processor.apply(refund))["order_id"] == order_id
    report = reconcile(engine, window_hours=1)
    assert not [m for m in report["mismatches"] if m["order_id"] == order_id]


async def test_payment_failed_starts_the_retries_once(
    processor: WebhookProcessor, orders: OrderClient, catalogue: Catalogue
) -> None:
    order_id = await place(orders, catalogue)
    first = parse_stripe(
        stripe_payment_failed(order_id, 129900, payment_intent_id=f"pi_{order_id}")
    )
    again = parse_stripe(
        stripe_payment_failed(order_id, 129900, payment_intent_id=f"pi_{order_id}")
    )
    assert (await processor.apply(first))["status"] == "applied"
    assert (await processor.apply(again))["status"] == "applied"

    async def one_failure() -> bool:
        state = await orders.status(order_id)
        return state.failed_payments == 1 and state.status != "PENDING_PAYMENT"

    await eventually(one_failure)
    state = await orders.status(order_id)
    assert "Your card was declined." in " ".join(h.note for h in state.history)


async def test_temporal_unreachable_is_a_retryable_failure(
    settings: Settings, engine: Engine, orders: OrderClient, catalogue: Catalogue
) -> None:
    dead = await Client.connect(
        f"127.0.0.1:{embedded.free_port()}", lazy=True, retry_config=RetryConfig(max_retries=0)
    )
    order_id = await place(orders, catalogue)
    event = parse_stripe(stripe_payment_succeeded(order_id, 129900))
    with pytest.raises(Exception) as info:
        await WebhookProcessor(OrderClient(dead, settings, engine), engine).apply(event)
    assert not isinstance(info.value, UnrecoverableError)
    assert event_row(engine, "stripe", event.event_id).status == "RECEIVED"
    # the retry, with Temporal back, applies it
    assert (await WebhookProcessor(orders, engine).apply(event))["status"] == "applied"
    await wait_status(orders, order_id, "CONFIRMED")


async def test_worker_dead_letters_unrecoverable_and_retries_transient(
    settings: Settings, engine: Engine, orders: OrderClient, redis_url: str
) -> None:
    spec = webhook_test_spec(settings, attempts=3, backoff={"type": "fixed", "delay": 10})
    producer = QueueProducer.connect(spec, redis_url)
    unknown = parse_stripe(stripe_payment_succeeded("nobody", 500, event_id="evt_dlq_unknown"))
    await producer.add(unknown.job_name, unknown.to_job(), {"jobId": unknown.job_id})
    await producer.add("stripe-webhook", {"provider": "stripe"}, {"jobId": "bad-shape"})
    await producer.add("mystery-job", {}, {"jobId": "bad-name"})
    client = RedisClient(redis_url)
    dlq = DeadLetterQueue(spec, client)
    at_once = settings.model_copy(
        update={"webhook": settings.webhook.model_copy(update={"unknown_order_window_seconds": 0})}
    )
    async with running(spec, build_webhook_processor(at_once, orders, engine), redis_url):
        await eventually(lambda: _dlq_has(dlq, 3))
    entries = {e.id: e for e in await dlq.list()}
    assert entries["stripe-evt_dlq_unknown"].attempts_made == 1  # no retries for it
    assert entries["stripe-evt_dlq_unknown"].unrecoverable
    assert "evt_dlq_unknown" in entries["stripe-evt_dlq_unknown"].failed_reason
    assert "nobody" in entries["stripe-evt_dlq_unknown"].failed_reason
    assert "malformed job 'bad-shape'" in entries["bad-shape"].failed_reason
    assert "unknown job name" in entries["bad-name"].failed_reason

    dead = await Client.connect(
        f"127.0.0.1:{embedded.free_port()}", lazy=True, retry_config=RetryConfig(max_retries=0)
    )
    transient = parse_stripe(stripe_payment_succeeded("whoever", 500, event_id="evt_transient"))
    await producer.add(transient.job_name, transient.to_job(), {"jobId": transient.job_id})
    unreachable = WebhookProcessor(OrderClient(dead, settings, engine), engine, queue=spec.name)
    async with running(spec, unreachable, redis_url):
        await eventually(lambda: _dlq_has(dlq, 4))
    entry = next(e for e in await dlq.list() if e.id == "stripe-evt_transient")
    assert entry.attempts_made == 3 and not entry.unrecoverable
    await producer.close()
    await client.close()


async def test_reconciliation_job_returns_the_mismatches(
    settings: Settings, engine: Engine, orders: OrderClient, redis_url: str
) -> None:
    processor = WebhookProcessor(orders, engine)
    orphan = parse_stripe(stripe_payment_succeeded("ghost-order", 4200))
    with pytest.raises(WebhookEventError):
        await processor.apply(orphan)
    spec = webhook_test_spec(settings)
    producer = QueueProducer.connect(spec, redis_url)
    job_id = await enqueue_reconciliation(producer, window_hours=1, job_id="recon-1")
    async with running(spec, build_webhook_processor(settings, orders, engine), redis_url):
        await eventually(lambda: _completed(spec, redis_url, 1))
    queue = bull_queue(spec, redis_url)
    job = await queue.getJob(job_id)
    await queue.close()
    await producer.close()
    report = job.returnvalue
    assert report["checked_events"] >= 1
    [found] = [m for m in report["mismatches"] if m["payment_id"] == orphan.payment_id]
    assert found["kind"] == "payment_not_applied" and "ghost-order" in found["detail"]


# ---- end to end: HTTP → queue → worker → workflow → email-queue → SMTP ---------------------


@pytest.fixture
async def system(
    settings: Settings, sink: SmtpSink, orders: OrderClient, engine: Engine, redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, QueueSpec, Settings]]:
    """The HTTP app and the bridge workers (email + webhooks), on the session's workflows."""
    mail_settings = settings.model_copy(update={"smtp_host": sink.host, "smtp_port": sink.port})
    spec = webhook_test_spec(mail_settings)
    # the workflows' notification activity enqueues on the session's real email-queue
    specs = {EMAIL_QUEUE: email_spec(mail_settings), spec.name: spec}
    processors = {spec.name: build_webhook_processor(mail_settings, orders, engine)}
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_bridge_workers(mail_settings, stop, processors, specs=specs, engine=engine)
    )
    producer = QueueProducer.connect(spec, redis_url)
    transport = httpx.ASGITransport(app=create_app(mail_settings, producer))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http, spec, mail_settings
    stop.set()
    await asyncio.wait_for(task, 30)
    await producer.close()


async def test_signed_stripe_webhook_confirms_the_order_and_mails_once(
    system: tuple[httpx.AsyncClient, QueueSpec, Settings],
    sink: SmtpSink,
    orders: OrderClient,
    catalogue: Catalogue,
    engine: Engine,
    redis_url: str,
) -> None:
    http, spec, settings = system
    order_id = await place(orders, catalogue, price=129_900)
    body = stripe_payment_succeeded(order_id, 129900, event_id=f"evt_e2e_{order_id}")
    for _ in range(5):  # Stripe redelivers; each delivery is signed afresh
        response = await http.post(
            "/webhooks/stripe", content=body, headers=signed_headers("stripe", body, settings)
        )
        assert response.status_code == 200, response.text
    await wait_status(orders, order_id, "CONFIRMED")
    [mail] = await sink.store.wait_for(1, within=20, to=f"{order_id}@example.com")
    assert order_id in mail.subject and "Order Confirmed" in mail.subject
    assert order_id in mail.text and "₹1,299.00" in mail.text

    async def settled() -> bool:  # nothing left in flight that could send a second mail
        queues = [await counts(email_spec(settings), redis_url), await counts(spec, redis_url)]
        return all(q.get(k, 0) == 0 for q in queues for k in ("waiting", "active", "delayed"))

    await eventually(settled, 20, "the email and webhook queues idle")
    delivered = [m for m in sink.store.deliveries() if f"{order_id}@example.com" in m.to]
    assert len(delivered) == 1
    assert payments(engine, order_id) == [("capture", "succeeded", 129_900)]
    assert (await counts(spec, redis_url))["completed"] == 1
    with Session(engine) as session:
        rows = session.exec(select(Payment).where(Payment.order_id == order_id)).all()
    assert len(rows) == 1


async def test_a_signed_stripe_event_whose_order_id_passes_luhn_is_recorded(
    system: tuple[httpx.AsyncClient, QueueSpec, Settings],
    orders: OrderClient,
    catalogue: Catalogue,
    engine: Engine,
) -> None:
    """A generated id passes Luhn one time in ten: the money moved, the event must be kept."""
    http, _, settings = system
    order_id = luhn_number("5", 13)  # shaped like 5234567890124: a Mastercard-looking run
    skus = catalogue(item=(129_900, 5))
    await pending_order(orders, [(skus["item"], 1)], order_id=order_id)
    event_id = f"evt_luhn_{order_id}"
    body = stripe_payment_succeeded(order_id, 129900, event_id=event_id)
    response = await http.post(
        "/webhooks/stripe", content=body, headers=signed_headers("stripe", body, settings)
    )
    assert response.status_code == 200, response.text
    state = await wait_status(orders, order_id, "CONFIRMED")
    assert state.payment_id == parse_stripe(body).payment_id
    row = await eventually(
        lambda: _applied(engine, event_id), 20, f"event {event_id} recorded as APPLIED"
    )
    assert (row.order_id, row.amount, row.currency) == (order_id, 129_900, "INR")
    assert payments(engine, order_id) == [("capture", "succeeded", 129_900)]


async def _applied(engine: Engine, event_id: str) -> WebhookEvent | None:
    with Session(engine) as session:
        row = session.exec(select(WebhookEvent).where(WebhookEvent.event_id == event_id)).first()
    return row if row is not None and row.status == "APPLIED" else None


async def _dlq_has(dlq: DeadLetterQueue, n: int) -> bool:
    return await dlq.count() >= n


async def _completed(spec: QueueSpec, redis_url: str, n: int) -> bool:
    return (await counts(spec, redis_url)).get("completed", 0) >= n


async def test_charge_without_metadata_waits_for_its_payment_intent(
    processor: WebhookProcessor, orders: OrderClient, catalogue: Catalogue, engine: Engine
) -> None:
    order_id = await place(orders, catalogue)
    pi = f"pi_{order_id}"
    charge = {"id": f"ch_{order_id}", "object": "charge", "amount": 129900, "currency": "inr"}
    early = parse_stripe(
        json.dumps(stripe_event("charge.succeeded", {**charge, "payment_intent": pi})).encode()
    )
    with pytest.raises(OrderNotYetKnownError, match=f"payment {pi} has no order_id") as info:
        await processor.apply(early, final=False)
    assert not isinstance(info.value, UnrecoverableError)  # retried: the PI event names the order
    await processor.apply(
        parse_stripe(stripe_payment_succeeded(order_id, 129900, payment_intent_id=pi))
    )
    await wait_status(orders, order_id, "CONFIRMED")
    result = await processor.apply(early)
    assert result["status"] == "applied" and result["order_id"] == order_id
    assert event_row(engine, "stripe", early.event_id).order_id == order_id
    assert payments(engine, order_id) == [("capture", "succeeded", 129_900)]


async def test_stripe_partial_refunds_without_the_refunds_list_are_counted_once_each(
    processor: WebhookProcessor, orders: OrderClient, engine: Engine, catalogue: Catalogue
) -> None:
    """`charge.refunded` carries the cumulative `amount_refunded` when refunds are not expanded."""
    order_id = await place(orders, catalogue, price=100_000)
    paid = parse_stripe(stripe_payment_succeeded(order_id, 100_000))
    await processor.apply(paid)
    await wait_status(orders, order_id, "CONFIRMED")
    charge = {"id": f"ch_{uuid.uuid4().hex[:12]}", "object": "charge", "amount": 100_000,
              "amount_captured": 100_000, "currency": "inr", "payment_intent": paid.payment_id,
              "metadata": {"order_id": order_id}}  # fmt: skip
    for cumulative in (30_000, 50_000, 50_000):  # two partial refunds, the second redelivered
        body = {**charge, "amount_refunded": cumulative}
        await processor.apply(
            parse_stripe(json.dumps(stripe_event("charge.refunded", body)).encode())
        )
    refunds = [p for p in payments(engine, order_id) if p[0] == "refund"]
    assert sum(amount for _, _, amount in refunds) == 50_000, refunds


async def test_a_late_charge_for_the_payment_a_shipped_order_kept_is_a_duplicate_not_a_refund(
    settings: Settings, processor: WebhookProcessor, orders: OrderClient, catalogue: Catalogue,
    engine: Engine, redis_url: str,
) -> None:  # fmt: skip
    order_id = await place(orders, catalogue, price=129_900)
    paid = parse_stripe(stripe_payment_succeeded(order_id, 129_900))
    await processor.apply(paid)
    await wait_status(orders, order_id, "CONFIRMED")
    await orders.shipped(order_id)
    assert (await orders.result(order_id)).status == "SHIPPED"  # the workflow has closed
    charge = {"id": f"ch_{order_id}", "object": "charge", "amount": 129_900,
              "amount_captured": 129_900, "currency": "inr", "payment_intent": paid.payment_id,
              "metadata": {"order_id": order_id}}  # fmt: skip
    late = parse_stripe(json.dumps(stripe_event("charge.succeeded", charge)).encode())
    # re-driven through the worker, as a redelivery or an operator's retry would be
    spec = webhook_test_spec(settings)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add(late.job_name, late.to_job(), {"jobId": late.job_id})
    dlq = DeadLetterQueue(spec, RedisClient(redis_url))
    async with running(spec, WebhookProcessor(orders, engine, queue=spec.name), redis_url):

        async def finished() -> bool:
            return await _completed(spec, redis_url, 1) or await _dlq_has(dlq, 1)

        await eventually(finished, what="the late charge's job")
    assert [e.failed_reason for e in await dlq.list()] == []
    row = event_row(engine, "stripe", late.event_id)
    assert row.status == "DUPLICATE" and paid.payment_id in row.detail and order_id in row.detail
    assert "refund" not in row.detail
    assert payments(engine, order_id) == [("capture", "succeeded", 129_900)]
    report = reconcile(engine, window_hours=1)
    assert not [m for m in report["mismatches"] if m["order_id"] == order_id]
    # a payment the closed order does not hold is still money to give back
    other = parse_stripe(stripe_payment_succeeded(order_id, 129_900))
    with pytest.raises(WebhookEventError, match="refund it"):
        await processor.apply(other)
    assert event_row(engine, "stripe", other.event_id).status == "UNAPPLIED"
    await producer.close()


# ---- Stripe Radar: the risk of a PaymentIntent's charge is known before the order hears -----


def _radar(level: str) -> Callable[[str, str, bytes], bytes]:
    """A rewrite of localstripe's charge answers: Radar's outcome, which localstripe leaves out."""

    def add(method: str, path: str, body: bytes) -> bytes:
        charge = json.loads(body) if path.startswith("/v1/charges/") else {}
        if charge.get("object") != "charge":
            return body
        score = {"normal": 20, "elevated": 72, "highest": 90}[level]
        outcome = {"type": "authorized", "risk_level": level, "risk_score": score}
        return json.dumps({**charge, "outcome": outcome}).encode()

    return add


def _localstripe_charge(localstripe: LocalStripe, amount: int) -> tuple[str, str]:
    """A PaymentIntent paid at localstripe (no order in its metadata): its id and its charge's."""
    client = stripe.StripeClient(
        STRIPE_TEST_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0
    )
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    method = client.v1.payment_methods.create(params={"type": "card", "card": card})
    intent = client.v1.payment_intents.create(
        params={"amount": amount, "currency": "inr", "payment_method": method.id, "confirm": True}
    )
    charge = intent.latest_charge
    return intent.id, charge if isinstance(charge, str) else charge.id


def _intent_succeeded(order_id: str, amount: int, intent_id: str, charge: object) -> GatewayEvent:
    """payment_intent.succeeded as Stripe sends it: `latest_charge` is the charge's id."""
    obj = {**stripe_payment_intent(order_id, amount, payment_intent_id=intent_id),
           "latest_charge": charge}  # fmt: skip
    return parse_stripe(json.dumps(stripe_event("payment_intent.succeeded", obj)).encode())


async def test_payment_intent_succeeded_before_its_elevated_risk_charge_sends_the_order_to_review(
    orders: OrderClient, catalogue: Catalogue, engine: Engine, localstripe: LocalStripe
) -> None:
    order_id = await place(orders, catalogue, price=129_900)
    intent_id, charge_id = _localstripe_charge(localstripe, 129_900)
    proxy = StallingProxy(localstripe.url, stall_suffix=charge_id, stall=0,
                          rewrite=_radar("elevated")).start()  # fmt: skip
    gateway = StripeGateway(STRIPE_TEST_KEY, api_base=proxy.url)
    processor = WebhookProcessor(orders, engine, gateway=gateway)
    result = await processor.apply(_intent_succeeded(order_id, 129_900, intent_id, charge_id))
    assert result["status"] == "applied", result
    state = await wait_status(orders, order_id, "IN_REVIEW")
    assert state.flagged and state.payment_id == intent_id
    assert [p for _, p, _ in proxy.seen] == [f"/v1/charges/{charge_id}"]  # asked once
    proxy.stop()


async def test_payment_intent_whose_charge_risk_cannot_be_read_waits_and_is_not_passed_unflagged(
    orders: OrderClient, catalogue: Catalogue, engine: Engine, localstripe: LocalStripe
) -> None:
    order_id = await place(orders, catalogue, price=129_900)
    intent_id, charge_id = _localstripe_charge(localstripe, 129_900)
    proxy = StallingProxy(localstripe.url, stall_suffix=charge_id, stall=0,
                          rewrite=_radar("highest")).start()  # fmt: skip
    proxy.refuse = [503]  # Stripe away while the event is processed
    processor = WebhookProcessor(orders, engine, gateway=StripeGateway(STRIPE_TEST_KEY, api_base=proxy.url))  # fmt: skip
    event = _intent_succeeded(order_id, 129_900, intent_id, {"id": charge_id, "object": "charge"})
    job = Job(id=event.job_id, name=event.job_name, data=event.to_job(), opts={},
              attempts_made=0, timestamp=int(time.time() * 1000), token="t", queue="q")  # fmt: skip
    with pytest.raises(RetryLater, match=charge_id):  # waits in the delayed set, no attempt used
        await processor(job)
    assert event_row(engine, "stripe", event.event_id).status == "RECEIVED"
    assert (await orders.status(order_id)).status == "PENDING_PAYMENT"  # the order heard nothing
    assert (await processor(job))["status"] == "applied"  # Stripe back: the risk is known
    assert (await wait_status(orders, order_id, "IN_REVIEW")).flagged
    proxy.stop()


async def test_a_risky_charge_after_the_order_was_confirmed_is_surfaced_for_an_operator(
    processor: WebhookProcessor, orders: OrderClient, catalogue: Catalogue, engine: Engine
) -> None:
    order_id = await place(orders, catalogue, price=129_900)
    paid = parse_stripe(stripe_payment_succeeded(order_id, 129_900))
    await processor.apply(paid)
    await wait_status(orders, order_id, "CONFIRMED")
    charge = {"id": f"ch_{order_id}", "object": "charge", "amount": 129_900,
              "amount_captured": 129_900, "currency": "inr", "payment_intent": paid.payment_id,
              "metadata": {"order_id": order_id},
              "outcome": {"risk_level": "elevated", "risk_score": 70}}  # fmt: skip
    late = parse_stripe(json.dumps(stripe_event("charge.succeeded", charge)).encode())
    result = await processor.apply(late)
    assert "flagged as risky after" in result["detail"] and "CONFIRMED" in result["detail"]
    assert "review it before it ships" in event_row(engine, "stripe", late.event_id).detail
    assert (await orders.status(order_id)).flagged


# ---- a pay update that runs longer than the job's timeout ----------------------------------


async def test_a_webhook_job_whose_refused_hold_is_still_being_released_waits_for_that_release(
    env: WorkflowEnvironment, settings: Settings, engine: Engine, redis_url: str
) -> None:
    """A refused authorisation is released inside the `pay` update (up to ~10 min of gateway
    retries): a job timing out meanwhile must not start a second update and a second release."""
    stubs = Stubs(release_gate=asyncio.Event())
    orders = unit_client(env)
    short = settings.model_copy(
        update={"webhook": settings.webhook.model_copy(update={"timeout_seconds": 2.0})}
    )
    spec = webhook_test_spec(short, attempts=3, backoff={"type": "fixed", "delay": 10})
    processor = build_webhook_processor(short, orders, engine)
    runs = 0

    async def counted(job: Job) -> Any:
        nonlocal runs
        runs += 1
        return await processor(job)

    async with stub_worker(env, stubs, orders.task_queue):
        order = await pending_order(orders, [("bag", 1)])  # 10,000 paise; the hold is less
        obj = {**stripe_payment_intent(order.id, 5_000, status="requires_capture"),
               "amount_capturable": 5_000}  # fmt: skip
        hold = parse_stripe(
            json.dumps(stripe_event("payment_intent.amount_capturable_updated", obj)).encode()
        )
        producer = QueueProducer.connect(spec, redis_url)
        await producer.add(hold.job_name, hold.to_job(), {"jobId": hold.job_id})
        dlq = DeadLetterQueue(spec, RedisClient(redis_url))
        async with running(spec, counted, redis_url):
            await eventually(lambda: _is_set(stubs.releasing), 20, "the release at the gateway")

            async def past_the_timeout() -> bool:  # the job has outlived its 2 s timeout
                return runs >= 3 or await _dlq_has(dlq, 1)

            await eventually(past_the_timeout, 20, "the job run again while the update runs")
            stubs.release_gate.set()  # the gateway answers at last
            await eventually(lambda: _dlq_has(dlq, 1), 20, "the refused hold's event finished")
        await producer.close()
    assert len(stubs.called("release")) == 1  # one update, one release
    [entry] = await dlq.list()
    assert entry.attempts_made == 1 and entry.unrecoverable, entry.failed_reason
    assert f"released {hold.payment_id}" in entry.failed_reason
    assert "timed out" not in entry.failed_reason


async def _is_set(event: asyncio.Event) -> bool:
    return event.is_set()


async def test_a_usd_payment_for_an_inr_order_is_refused_and_left_for_an_operator_in_usd(
    processor: WebhookProcessor, orders: OrderClient, catalogue: Catalogue, engine: Engine
) -> None:
    """The order refuses money in another currency; the event says what to give back, in the
    payment's own currency, and an INR payment of the total is still taken afterwards."""
    order_id = await place(orders, catalogue, price=129_900)
    usd = parse_stripe(sample_event("stripe", order_id, 129_900, "USD"))
    assert usd.currency == "USD"
    with pytest.raises(WebhookEventError) as info:
        await processor.apply(usd)
    message = str(info.value)
    assert "$1,299.00" in message and "₹1,299.00" in message and "refund it" in message
    assert (await orders.status(order_id)).status == "PENDING_PAYMENT"
    row = event_row(engine, "stripe", usd.event_id)
    assert (row.status, row.amount, row.currency) == ("UNAPPLIED", 129_900, "USD")
    [found] = [
        m for m in reconcile(engine, window_hours=1)["mismatches"] if m["order_id"] == order_id
    ]
    assert found["kind"] == "payment_not_applied" and "$1,299.00" in found["detail"]
    inr = parse_stripe(stripe_payment_succeeded(order_id, 129_900))
    assert (await processor.apply(inr))["status"] == "applied"
    state = await wait_status(orders, order_id, "CONFIRMED")
    assert state.payment_id == inr.payment_id
    assert payments(engine, order_id) == [("capture", "succeeded", 129_900)]
    # the operator's refund of the USD payment, in USD, settles the mismatch
    body = json.loads(stripe_charge_refunded(usd.payment_id, 129_900, order_id=order_id))
    body["data"]["object"]["currency"] = "usd"
    refund = parse_stripe(json.dumps(body).encode())
    assert (await processor.apply(refund))["status"] == "applied"
    with Session(engine) as session:
        [given] = session.exec(
            select(Payment).where(Payment.order_id == order_id, Payment.kind == "refund")
        ).all()
    assert (given.refund_of, given.amount, given.currency) == (usd.payment_id, 129_900, "USD")
    assert not [m for m in reconcile(engine, window_hours=1)["mismatches"]
                if m["order_id"] == order_id and m["kind"] == "payment_not_applied"]  # fmt: skip
