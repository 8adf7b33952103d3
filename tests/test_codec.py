"""Customer data encrypted in Temporal, proved on the real stack: `orderflow run` processes
holding given codec keys, read back raw by a client without the codec and by the CLI.

(a) nothing of the customer's in clear in a paid and mailed order's history; (b) a key rotation
with orders waiting; (c) a worker without the key an order was written under fails that
order's workflow task naming the key, keeps running, and finishes it once the key is back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

from app.client import OrderClient
from orderflow import codec
from orderflow.codec import CodecKey
from orderflow.contracts.order import PaymentReceived, Shipment, order_workflow_id
from tests.codec_stack import CodecStack, cli_history, client_with, codec_stack, spawn_workers
from tests.helpers import eventually, wait_status
from tests.payload_walk import cleartext_payloads, leaks, payloads
from tests.test_distributed import healthy, stop
from workflows.order import OrderWorkflow

__all__ = ["codec_stack"]  # the module's fixture


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for the processes' probe ports."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def key(name: str) -> CodecKey:
    """A fresh key whose id says which it is and which test made it."""
    return codec.new_key(f"{name}-{uuid.uuid4().hex[:6]}")


async def raw_history(stack: CodecStack, order_id: str) -> WorkflowHistory:
    """The order's history as the server keeps it: fetched by a client without the codec."""
    plain = await client_with(stack)
    return await plain.get_workflow_handle(order_workflow_id(order_id)).fetch_history()


async def test_a_paid_and_mailed_order_keeps_no_customer_data_in_clear_in_temporal(
    codec_stack: CodecStack, http: httpx.AsyncClient
) -> None:
    stack, tag, a = codec_stack, uuid.uuid4().hex[:8], key("only")
    email, customer = f"asha.{tag}@example.com", f"cust.{tag}@example.com"
    sku, payment_id = stack.product(f"SKU-{tag}", 12_500), f"pi_{tag}"
    workers = await spawn_workers(stack, f"workers-{tag}", a)
    try:
        await healthy(http, workers)
        orders = OrderClient(await client_with(stack, a), stack.settings, stack.engine)
        order_id = f"o-{tag}"
        await orders.start_order(order_id, customer, email, [(sku, 2)])
        await wait_status(orders, order_id, "PENDING_PAYMENT")
        ack = await orders.payment_received(
            order_id, PaymentReceived(payment_id, 25_000, currency="INR")
        )
        assert ack.accepted, ack.reason
        await wait_status(orders, order_id, "CONFIRMED")
        mails = await stack.sink.store.wait_for(1, within=30, to=email)
        assert mails, f"no confirmation mail to {email}:\n{workers.tail()}"
    finally:
        assert await stop(workers) == [0], workers.tail()

    raw = await raw_history(stack, order_id)
    found = payloads(raw)
    assert len(found) > 10, f"only {len(found)} payloads in the history"
    assert not cleartext_payloads(raw), f"payloads in clear: {cleartext_payloads(raw)}"
    assert {f.key_id for f in found if f.encrypted} == {a.key_id}
    needles = [email, customer, sku, payment_id]
    assert not leaks(raw, needles), leaks(raw, needles)
    shown = await cli_history(stack, order_workflow_id(order_id))
    assert not [n for n in needles if n in shown], "the CLI's JSON shows customer data"
    assert "binary/encrypted" in shown or "YmluYXJ5L2VuY3J5cHRlZA==" in shown
    # and the data is there, sealed: the key opens every needle (the test can fail)
    opened = b"".join(
        codec.EncryptionCodec(codec.Keyring(a)).decode_one(f.payload).data
        for f in found
        if f.encrypted
    )
    assert all(n.encode() in opened for n in needles), "a needle never reached Temporal"


async def pending_orders(orders: OrderClient, sku: str, tag: str, count: int) -> list[str]:
    """Start `count` orders of one item and wait until each waits for its payment."""
    ids = [f"o-{tag}-{i}" for i in range(count)]
    for order_id in ids:
        await orders.start_order(order_id, f"c-{order_id}", f"{order_id}@example.com", [(sku, 1)])
    for order_id in ids:
        await wait_status(orders, order_id, "PENDING_PAYMENT")
    return ids


async def pay_and_ship(orders: OrderClient, order_id: str, amount: int) -> None:
    """Pay, wait for the confirmation, ship, wait for the workflow's result."""
    ack = await orders.payment_received(
        order_id,
        PaymentReceived(f"pi-{order_id}", amount, currency="INR"),
        update_id=f"pay-{order_id}",
    )
    assert ack.accepted, ack.reason
    await wait_status(orders, order_id, "CONFIRMED")
    await orders.shipped(order_id, Shipment(carrier="BlueDart", tracking_number="BD9"))
    handle = orders.client.get_workflow_handle_for(OrderWorkflow.run, order_workflow_id(order_id))
    assert (await asyncio.wait_for(handle.result(), 30)).status == "SHIPPED"


def key_ids(history: WorkflowHistory, first: int, last: int | None = None) -> set[str]:
    """The key ids of the sealed payloads of events first..last (by event id)."""
    return {
        f.key_id
        for f in payloads(history)
        if f.encrypted
        and first <= int(f.path.split()[1].split(".")[0]) <= (last or len(history.events))
    }


async def test_orders_written_under_one_key_finish_after_a_rotation_to_the_next(
    codec_stack: CodecStack, http: httpx.AsyncClient
) -> None:
    stack, tag = codec_stack, uuid.uuid4().hex[:8]
    a, b = key("rot-a"), key("rot-b")
    sku = stack.product(f"SKU-{tag}", 40_000)
    before = await spawn_workers(stack, f"before-{tag}", a)
    try:
        await healthy(http, before)
        orders_a = OrderClient(await client_with(stack, a), stack.settings, stack.engine)
        ids = await pending_orders(orders_a, sku, tag, 3)
    finally:
        assert await stop(before) == [0], before.tail()
    written = {oid: len((await raw_history(stack, oid)).events) for oid in ids}

    # the rotation: B is current, A still decrypts; the client that pays holds both too
    after = await spawn_workers(stack, f"after-{tag}", b, [a])
    try:
        await healthy(http, after)
        orders_b = OrderClient(await client_with(stack, b, a), stack.settings, stack.engine)
        await asyncio.gather(*(pay_and_ship(orders_b, oid, 40_000) for oid in ids))
    finally:
        assert await stop(after) == [0], after.tail()

    for order_id in ids:
        raw = await raw_history(stack, order_id)
        assert not cleartext_payloads(raw), cleartext_payloads(raw)
        assert key_ids(raw, 1, written[order_id]) == {a.key_id}, order_id
        assert key_ids(raw, written[order_id] + 1) == {b.key_id}, order_id


async def task_failure(client: Client, order_id: str) -> str | None:
    """The message of the order's workflow task failure as the history holds it (no codec),
    once the task has been handed out again (attempt 2 or later)."""
    handle = client.get_workflow_handle(order_workflow_id(order_id))
    pending = (await handle.describe()).raw_description.pending_workflow_task
    for event in (await handle.fetch_history()).events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED and pending.attempt > 1:
            return event.workflow_task_failed_event_attributes.failure.message
    return None


async def task_completed_after_failure(client: Client, order_id: str) -> bool:
    """The failed workflow task has been completed since (the server takes updates again)."""
    events = await client.get_workflow_handle(order_workflow_id(order_id)).fetch_history()
    kinds = [event.event_type for event in events.events]
    failed = kinds.index(EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    return EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in kinds[failed:]


async def test_a_worker_without_the_orders_key_names_it_keeps_running_and_finishes_once_it_is_back(
    codec_stack: CodecStack, http: httpx.AsyncClient
) -> None:
    stack, tag = codec_stack, uuid.uuid4().hex[:8]
    a, b = key("gone-a"), key("gone-b")
    sku = stack.product(f"SKU-{tag}", 40_000)
    before = await spawn_workers(stack, f"before-{tag}", a)
    try:
        await healthy(http, before)
        orders_a = OrderClient(await client_with(stack, a), stack.settings, stack.engine)
        [order_id] = await pending_orders(orders_a, sku, tag, 1)
    finally:
        assert await stop(before) == [0], before.tail()

    # A removed: the payment wakes the order, whose history (under A) this worker cannot read
    without = await spawn_workers(stack, f"without-{tag}", b)
    client_b = await client_with(stack, b)
    payment = PaymentReceived(f"pi-{order_id}", 40_000, currency="INR")
    orders_b = OrderClient(client_b, stack.settings, stack.engine)
    try:
        await healthy(http, without)
        pay = asyncio.ensure_future(
            orders_b.payment_received(order_id, payment, update_id=f"pay-{order_id}")
        )
        # in clear (a key error names key ids only): read without any key, as the UI shows it
        plain = await client_with(stack)
        error = await eventually(
            lambda: task_failure(plain, order_id), 30, f"order {order_id}'s task failure"
        )
        assert error.startswith(f"payload encrypted with codec key {a.key_id!r}"), error
        assert f"(it has {b.key_id!r}): add it to ORDERFLOW_CODEC_OLD_KEYS" in error, error
        # retried on the same process, which still runs and answers its probe
        assert without.proc.returncode is None, without.tail()
        assert (await http.get(f"http://127.0.0.1:{without.port}/healthz")).status_code == 200
        description = await client_b.get_workflow_handle(order_workflow_id(order_id)).describe()
        assert description.status is not None and description.status.name == "RUNNING"
    finally:
        assert await stop(without) == [0], without.tail()
    log = without.log.read_text(errors="replace")
    assert f"codec key {a.key_id!r}" in log
    assert not [k for k in (a, b) if k.spec().split(":")[1] in log], "a secret in the log"
    await asyncio.gather(pay, return_exceptions=True)  # refused while the task failed

    # A back as an old key: the order is paid (the same update id) and finishes
    restored = await spawn_workers(stack, f"restored-{tag}", b, [a])
    try:
        await healthy(http, restored)
        client_ab = await client_with(stack, b, a)
        # the task handed to the stopped worker times out, then this one completes it
        await eventually(
            lambda: task_completed_after_failure(client_ab, order_id), 40, "the task completed"
        )
        orders_ab = OrderClient(client_ab, stack.settings, stack.engine)
        await pay_and_ship(orders_ab, order_id, 40_000)
    finally:
        assert await stop(restored) == [0], restored.tail()
    raw = await raw_history(stack, order_id)
    assert not cleartext_payloads(raw), cleartext_payloads(raw)
    assert {f.key_id for f in payloads(raw) if f.encrypted} == {a.key_id, b.key_id}
