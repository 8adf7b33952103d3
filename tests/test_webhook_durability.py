"""Payment webhooks outlive outages and early arrivals: nothing dead-letters a payment for a
reason that time fixes, and what does go to the dead-letter queue says so in its event row."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine
from temporalio.client import Client

from app import embedded
from app.client import OrderClient
from bridge.dlq import DeadLetterQueue
from bridge.producer import QueueProducer
from bridge.redis_client import RedisClient
from bridge.specs import QueueSpec
from orderflow.settings import Settings
from payments.providers.stripe import parse_stripe, stripe_event, stripe_payment_succeeded
from tests.bridge_helpers import counts, running
from tests.helpers import event_row, eventually, new_order_id, pending_order, wait_status
from workers.queues import build_webhook_processor, webhook_spec
from workers.temporal import Dependencies, build_workers

Catalogue = Callable[..., dict[str, str]]
OUTAGE_SECONDS = 30.0  # twice what the old 5 attempts (1-8 s apart) could wait out


def _spec(settings: Settings) -> QueueSpec:
    tag = uuid.uuid4().hex[:10]
    return webhook_spec(settings).with_(prefix=f"t{tag}", name=f"webhook-{tag}")


async def _enqueue(spec: QueueSpec, redis_url: str, body: bytes) -> str:
    event = parse_stripe(body)
    producer = QueueProducer.connect(spec, redis_url)
    try:
        await producer.add(event.job_name, event.to_job(), {"jobId": event.job_id})
    finally:
        await producer.close()
    return event.event_id


async def test_a_webhook_during_a_30s_temporal_outage_confirms_once_temporal_is_back(
    tmp_path: Path,
    settings: Settings,
    engine: Engine,
    deps: Dependencies,
    redis_url: str,
    catalogue: Catalogue,
) -> None:
    port = embedded.free_port()
    db_file, log = tmp_path / "temporal.db", tmp_path / "temporal.log"
    server = embedded.start_temporal(port=port, ui_port=None, db_file=db_file, log=log)
    client = await Client.connect(f"127.0.0.1:{port}")
    workers = build_workers(client, settings, deps)
    running_workers = [asyncio.create_task(w.run()) for w in workers]
    spec = _spec(settings)
    orders = OrderClient(client, settings, engine)
    try:
        skus = catalogue(kettle=(250_000, 3))
        order = await pending_order(orders, [(skus["kettle"], 1)])
        async with running(spec, build_webhook_processor(settings, orders, engine), redis_url):
            embedded.stop(server)  # Temporal goes away; the gateway calls now
            down_at = time.monotonic()
            event_id = await _enqueue(spec, redis_url, stripe_payment_succeeded(order.id, 250_000))

            async def waited_out_the_outage() -> bool:
                # the outage itself is the scenario: it lasts OUTAGE_SECONDS while the job waits
                c = await counts(spec, redis_url)
                return time.monotonic() - down_at >= OUTAGE_SECONDS and c["delayed"] == 1

            await eventually(waited_out_the_outage, OUTAGE_SECONDS + 30, "the outage waited out")
            assert (await counts(spec, redis_url))["failed"] == 0
            server = embedded.start_temporal(port=port, ui_port=None, db_file=db_file, log=log)
            await wait_status(orders, order.id, "CONFIRMED", timeout=60)

            # the job writes its row after the order's answer; if an attempt's update reached the
            # server as it came back but its answer did not, the next attempt (backoff capped at
            # a minute) finds the same payment already accepted and records it
            async def recorded() -> bool:
                return event_row(engine, "stripe", event_id).status == "APPLIED"

            await eventually(
                recorded, 90, lambda: f"event row {event_row(engine, 'stripe', event_id)}"
            )
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        await asyncio.gather(*running_workers, return_exceptions=True)
        embedded.stop(server)


async def test_a_webhook_for_an_order_started_a_moment_later_is_applied(
    settings: Settings, engine: Engine, orders: OrderClient, redis_url: str, catalogue: Catalogue
) -> None:
    skus = catalogue(tray=(40_000, 3))
    order_id = new_order_id()
    spec = _spec(settings)
    async with running(spec, build_webhook_processor(settings, orders, engine), redis_url):
        event_id = await _enqueue(spec, redis_url, stripe_payment_succeeded(order_id, 40_000))

        async def delayed() -> bool:
            return (await counts(spec, redis_url))["delayed"] == 1

        await eventually(delayed, 10, "the event waiting for its order")
        await orders.start_order(order_id, "c", "c@example.com", [(skus["tray"], 1)])
        await wait_status(orders, order_id, "CONFIRMED")
    assert event_row(engine, "stripe", event_id).status == "APPLIED"


async def test_a_charge_naming_no_order_is_rejected_in_its_row_when_dead_lettered(
    settings: Settings, engine: Engine, orders: OrderClient, redis_url: str
) -> None:
    at_once = settings.model_copy(
        update={"webhook": settings.webhook.model_copy(update={"unknown_order_window_seconds": 0})}
    )
    spec = _spec(settings)
    charge = {"id": f"ch_{uuid.uuid4().hex[:12]}", "object": "charge", "amount": 500,
              "amount_captured": 500, "currency": "inr", "payment_intent": "pi_nobody",
              "metadata": {}}  # fmt: skip
    body = json.dumps(stripe_event("charge.succeeded", charge)).encode()
    dlq = DeadLetterQueue(spec, RedisClient(redis_url))
    async with running(spec, build_webhook_processor(at_once, orders, engine), redis_url):
        event_id = await _enqueue(spec, redis_url, body)

        async def dead_lettered() -> bool:
            return await dlq.count() == 1

        await eventually(dead_lettered, 10, "the charge dead-lettered")
    row = event_row(engine, "stripe", event_id)
    assert row.status == "REJECTED" and "names no order" in row.detail
    await dlq.client.close()
