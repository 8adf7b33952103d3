"""Reconciliation sees every place money can go missing: returns, failed refunds, stuck events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app import embedded
from bridge.producer import QueueProducer
from orderflow.contracts.order import OrderStatus, PaymentAck, PaymentFailed, PaymentReceived
from orderflow.contracts.payment import PaymentKind, PaymentStatus, WebhookEventStatus
from orderflow.db import Order, Payment, WebhookEvent
from orderflow.settings import Settings
from payments.processor import WebhookProcessor
from payments.reconciliation import enqueue_reconciliation, reconcile
from payments.stripe_gateway import StripeGateway
from tests.bridge_helpers import bull_queue, running
from tests.fake_gateways import STRIPE_TEST_KEY, LocalStripe
from tests.helpers import eventually
from workers.queues import webhook_spec


def _order(session: Session, status: OrderStatus, total: int = 50_000) -> str:
    order_id = f"r-{uuid.uuid4().hex[:10]}"
    session.add(Order(id=order_id, customer_id="c", email="c@example.com", status=status,
                      total=total, currency="INR"))  # fmt: skip
    return order_id


def _pay(session: Session, order_id: str, kind: PaymentKind, amount: int) -> None:
    session.add(Payment(order_id=order_id, provider="stripe", kind=kind, amount=amount,
                        payment_id=f"{kind}-{uuid.uuid4().hex[:8]}", currency="INR",
                        status=PaymentStatus.SUCCEEDED))  # fmt: skip


def _kinds(report: dict[str, object], order_id: str) -> set[str]:
    mismatches = report["mismatches"]
    assert isinstance(mismatches, list)
    return {m["kind"] for m in mismatches if m["order_id"] == order_id}


def test_a_return_not_refunded_and_a_failed_refund_are_reported(engine: Engine) -> None:
    with Session(engine) as session:
        returned = _order(session, OrderStatus.RETURNED)
        _pay(session, returned, PaymentKind.CAPTURE, 50_000)
        refunded_return = _order(session, OrderStatus.RETURNED)
        _pay(session, refunded_return, PaymentKind.CAPTURE, 50_000)
        _pay(session, refunded_return, PaymentKind.REFUND, 50_000)
        owed = _order(session, OrderStatus.REFUND_FAILED)
        _pay(session, owed, PaymentKind.CAPTURE, 50_000)
        session.commit()
    report = reconcile(engine, window_hours=1)
    assert _kinds(report, returned) == {"returned_not_refunded"}
    assert _kinds(report, refunded_return) == set()
    assert "refund_failed" in _kinds(report, owed)


def test_an_event_left_received_past_the_grace_is_reported(engine: Engine) -> None:
    now = datetime.now(UTC)
    stuck, fresh = (f"evt_{uuid.uuid4().hex[:10]}" for _ in range(2))
    with Session(engine) as session:
        order_id = _order(session, OrderStatus.PENDING_PAYMENT)
        for event_id, age in ((stuck, timedelta(minutes=45)), (fresh, timedelta(minutes=1))):
            session.add(WebhookEvent(provider="stripe", event_id=event_id, type="payment_intent.succeeded",
                                     order_id=order_id, payment_id=f"pi_{event_id}", amount=50_000,
                                     currency="INR", status=WebhookEventStatus.RECEIVED,
                                     received_at=now - age))  # fmt: skip
        session.commit()
    report = reconcile(engine, window_hours=1, now=now)
    mine = [m for m in report["mismatches"] if m["order_id"] == order_id]
    assert [m["kind"] for m in mine] == ["event_not_applied"]
    assert stuck in mine[0]["detail"] and "RECEIVED" in mine[0]["detail"]


class _NoOrders:
    """The reconciliation job never reports a payment to an order: any call is a test failure."""

    async def payment_received(
        self, order_id: str, payment: PaymentReceived, **_: object
    ) -> PaymentAck:
        raise AssertionError(f"reconciliation reported a payment to order {order_id}")

    async def payment_failed(self, order_id: str, failure: PaymentFailed) -> None:
        raise AssertionError(f"reconciliation reported a failure to order {order_id}")


async def test_a_gateway_outage_still_reports_our_own_checks_and_compares_once_the_gateway_is_back(
    engine: Engine, settings: Settings, redis_url: str, localstripe: LocalStripe
) -> None:
    with Session(engine) as session:
        returned = _order(session, OrderStatus.RETURNED)
        _pay(session, returned, PaymentKind.CAPTURE, 50_000)
        session.commit()
    dead = f"http://127.0.0.1:{embedded.free_port()}"  # nothing listens: the gateway is away
    processor = WebhookProcessor(
        _NoOrders(), engine, gateway=StripeGateway(STRIPE_TEST_KEY, api_base=dead, timeout=2)
    )
    tag = uuid.uuid4().hex[:10]
    spec = webhook_spec(settings).with_(prefix=f"t{tag}", name=f"recon-{tag}")
    producer = QueueProducer.connect(spec, redis_url)
    queue = bull_queue(spec, redis_url)
    try:
        async with running(spec, processor, redis_url):
            job_id = await enqueue_reconciliation(producer, window_hours=1, job_id=f"recon-{tag}")

            async def waiting_with_partial_report() -> dict[str, Any] | None:
                job = await queue.getJob(job_id)
                state = await queue.getJobState(job_id)
                if job is None or state != "delayed" or not isinstance(job.progress, dict):
                    return None
                return dict(job.progress)

            partial = await eventually(waiting_with_partial_report, 30, "the job waiting it out")
            # our own tables were checked and are reported; the comparison is named as not done
            assert _kinds(partial, returned) == {"returned_not_refunded"}
            assert partial["gateway"] == "stripe" and partial["gateway_compared"] is False
            assert "stripe unavailable" in partial["gateway_error"]
            assert STRIPE_TEST_KEY not in json.dumps(partial)
            job = await queue.getJob(job_id)
            assert not job.finishedOn and job.returnvalue is None  # no "no mismatches" claimed
            assert job.attemptsMade == 0  # an outage uses up no attempt

            processor.gateway = StripeGateway(STRIPE_TEST_KEY, api_base=localstripe.url)

            async def report() -> dict[str, Any] | None:
                job = await queue.getJob(job_id)
                return job.returnvalue if job is not None and job.finishedOn else None

            found = await eventually(report, 30, "the reconciliation once the gateway is back")
        assert found["gateway_compared"] is True and found["gateway_error"] == ""
        # now Stripe's side was asked too: it never took our (test-made) capture
        assert _kinds(found, returned) == {"returned_not_refunded", "capture_not_at_gateway"}
    finally:
        await producer.close()
        await queue.close()


async def test_a_gateway_away_past_the_outage_window_fails_the_job_naming_it_not_completes_it(
    engine: Engine, settings: Settings, redis_url: str
) -> None:
    dead = f"http://127.0.0.1:{embedded.free_port()}"
    processor = WebhookProcessor(
        _NoOrders(),
        engine,
        gateway=StripeGateway(STRIPE_TEST_KEY, api_base=dead, timeout=2),
        outage_window_seconds=0,  # the window is over: no more waiting it out
    )
    job, state = await _reconciliation_ended(processor, settings, redis_url)
    assert state == "failed" and job.returnvalue is None
    assert "the stripe comparison was not done" in job.failedReason
    assert "stripe unavailable" in job.failedReason and STRIPE_TEST_KEY not in job.failedReason
    assert job.progress["gateway_compared"] is False  # our own checks, kept for the operator


async def test_a_gateway_that_refuses_our_key_fails_the_reconciliation_at_once_naming_it(
    engine: Engine, settings: Settings, redis_url: str, localstripe: LocalStripe
) -> None:
    """A refused key does not come back by itself: the job fails now, not after the 2 h window."""
    processor = WebhookProcessor(
        _NoOrders(), engine, gateway=StripeGateway("pk_not_a_secret_key", api_base=localstripe.url)
    )
    job, state = await _reconciliation_ended(processor, settings, redis_url)
    assert state == "failed", "a refused key was waited out"
    assert "the stripe comparison was not done" in job.failedReason
    assert "refused" in job.failedReason and "pk_not_a_secret_key" not in job.failedReason
    assert job.progress["gateway_compared"] is False  # our own checks, kept for the operator


async def _reconciliation_ended(
    processor: WebhookProcessor, settings: Settings, redis_url: str
) -> tuple[Any, str]:
    """Run one reconciliation job (one attempt) until it fails or waits: the job and its state."""
    tag = uuid.uuid4().hex[:10]
    spec = webhook_spec(settings).with_(prefix=f"t{tag}", name=f"recon-{tag}", attempts=1)
    producer = QueueProducer.connect(spec, redis_url)
    queue = bull_queue(spec, redis_url)
    try:
        async with running(spec, processor, redis_url):
            job_id = await enqueue_reconciliation(producer, window_hours=1, job_id=f"recon-{tag}")

            async def ended() -> Any:
                job = await queue.getJob(job_id)
                return job if job is not None and (job.failedReason or job.delay) else None

            job = await eventually(ended, 30, "the reconciliation failing or waiting")
        return job, await queue.getJobState(job_id)
    finally:
        await producer.close()
        await queue.close()
