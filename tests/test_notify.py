"""Order mail end to end through the real producer and its payload guard: a mail never blocks an
order, and ids, SKUs and tracking numbers that look like card numbers are not refused."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from activities.erp import HttpErp
from app import embedded
from app.client import OrderClient
from app.smtp_sink import SmtpSink
from bridge.guard import luhn_valid
from bridge.producer import QueueProducer
from bridge.specs import QueueSpec
from mail.processor import EmailProcessor
from orderflow.contracts.order import PaymentReceived, Shipment
from orderflow.db import Product
from orderflow.settings import Settings
from tests import temporal_env
from tests.bridge_helpers import bull_queue, running
from tests.fake_erp import FakeErp
from tests.helpers import PendingOrder, luhn_number, payments, pending_order, wait_status
from workers.queues import email_spec
from workers.temporal import Dependencies, build_workers

GS1_EAN13 = "5901234123457"  # the GS1 example barcode: a valid EAN-13 that also passes Luhn
PRICE = 49_900


@dataclass
class MailSystem:
    """Workers whose notification activity enqueues through the guarded producer."""

    orders: OrderClient
    spec: QueueSpec
    sink: SmtpSink
    redis_url: str


@pytest.fixture(scope="module")
async def system(
    settings: Settings,
    engine: Engine,
    erp: FakeErp,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[MailSystem]:
    """A Temporal dev server of this module's own, the real email producer, worker and sink."""
    sink = SmtpSink(tmp_path_factory.mktemp("mail"), "127.0.0.1", embedded.free_port()).start()
    local = settings.model_copy(update={"smtp_host": sink.host, "smtp_port": sink.port})
    tag = uuid.uuid4().hex[:8]
    spec = email_spec(local).with_(prefix=f"t{tag}", name=f"email-{tag}", rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    async with await temporal_env.start_local() as env:
        deps = dataclasses.replace(
            Dependencies.from_settings(local, engine, producer), erp=HttpErp(erp.url)
        )
        workers = build_workers(env.client, local, deps)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        async with running(spec, EmailProcessor(local, spec, engine), redis_url):
            yield MailSystem(OrderClient(env.client, local, engine), spec, sink, redis_url)
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*tasks, return_exceptions=True)
    await producer.close()
    sink.stop()


def barcode_product(engine: Engine) -> str:
    """The product whose SKU is the GS1 example EAN-13 (created once per database)."""
    assert luhn_valid(GS1_EAN13)
    with Session(engine) as session:
        if session.get(Product, GS1_EAN13) is None:
            session.add(Product(sku=GS1_EAN13, name="barcode mug", price=PRICE, on_hand=1000))
            session.commit()
    return GS1_EAN13


async def confirmed(system: MailSystem, engine: Engine) -> PendingOrder:
    """An order of the barcode SKU, paid and CONFIRMED; its confirmation mail delivered."""
    orders = system.orders
    order = await pending_order(orders, [(barcode_product(engine), 1)])
    order_id = order.id
    ack = await orders.payment_received(
        order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=PRICE, currency="INR")
    )
    assert ack.accepted, ack.reason
    await wait_status(orders, order_id, "CONFIRMED")
    [mail] = await system.sink.store.wait_for(
        1, within=20, to=f"{order_id}@example.com", subject="Order Confirmed"
    )
    assert GS1_EAN13 in mail.text
    return order


async def test_an_order_for_a_sku_that_passes_luhn_is_mailed_and_shipped(
    system: MailSystem, engine: Engine
) -> None:
    order_id = (await confirmed(system, engine)).id
    tracking = luhn_number("2", 14)  # a numeric courier tracking number, Luhn-valid too
    await system.orders.shipped(order_id, Shipment(carrier="Delhivery", tracking_number=tracking))
    state = await wait_status(system.orders, order_id, "SHIPPED")
    [mail] = await system.sink.store.wait_for(
        1, within=20, to=f"{order_id}@example.com", subject="Shipped"
    )
    assert f"Delhivery tracking number: {tracking}" in mail.text
    assert not [h.note for h in state.history if "mail" in h.note]


async def test_a_refused_cancellation_mail_is_noted_and_the_order_still_ends(
    system: MailSystem, engine: Engine
) -> None:
    """A reason the customer typed holding their card number: that mail is refused, not the
    order's end (it was refunded before the mail, and the run must finish)."""
    order = await confirmed(system, engine)
    order_id = order.id
    card = "4242 4242 4242 4242"
    await system.orders.cancel(order_id, f"please refund to my card {card}")
    result = await asyncio.wait_for(order.handle.result(), 30)
    assert result.status == "CANCELLED"
    assert payments(engine, order_id) == [
        ("capture", "succeeded", PRICE),
        ("refund", "succeeded", PRICE),
    ]
    state = await system.orders.status(order_id)
    [failed] = [h.note for h in state.history if "mail" in h.note]
    assert "cancellation mail not sent" in failed and "card number" in failed
    assert card not in failed
    queue = bull_queue(system.spec, system.redis_url)
    assert await queue.getJob(f"order-cancelled-{order_id}") is None  # never in Redis
    await queue.close()
