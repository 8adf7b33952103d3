"""Small waits and reads shared by the workflow tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from app import embedded
from app.client import OrderClient, policy_from_settings
from app.web.app import create_app, http_server
from bridge.producer import QueueProducer
from bridge.specs import QueueSpec
from orderflow.contracts.order import (
    OrderInput,
    OrderLine,
    OrderResult,
    OrderState,
    PaymentReceived,
    order_workflow_id,
)
from orderflow.contracts.review import PendingReview
from orderflow.db import Payment, Product, WebhookEvent
from orderflow.settings import Settings
from tests.fake_erp import FakeErp
from workers.queues import email_spec
from workflows.order import OrderWorkflow

T = TypeVar("T")


def new_order_id() -> str:
    """A unique order id per test."""
    return f"t-{uuid.uuid4().hex[:10]}"


def luhn_number(prefix: str, length: int) -> str:
    """A random digit string of `length` starting with `prefix` whose last digit makes it pass
    Luhn: shaped like a card number, as one generated id or barcode in ten is."""
    free = length - 1 - len(prefix)
    body = prefix + str(uuid.uuid4().int % 10**free).zfill(free)
    total = 0
    for i, ch in enumerate(reversed(body)):  # the check digit will sit at the odd position 0
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    within: float = 10.0,
    what: str | Callable[[], str] = "condition",
) -> T:
    """Poll `check` until it returns a truthy value and return that value; fail after `within` s.

    `what` names the condition in the failure; a callable is asked only then (for the last state).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"{described} not met within {within}s")
        await asyncio.sleep(0.05)  # the poll interval, not a wait for anything


async def started_workflow(
    client: Client, workflow_id: str, within: float = 20.0
) -> WorkflowHandle:
    """The handle of a workflow another one starts (a child), once the server knows it."""
    handle = client.get_workflow_handle(workflow_id)

    async def exists() -> bool:
        try:
            await handle.describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    await eventually(exists, within, f"workflow {workflow_id} started")
    return handle


async def wait_status(
    orders: OrderClient, order_id: str, status: str, timeout: float = 20.0
) -> OrderState:
    """Poll the status query until the order reaches `status`."""
    last: list[OrderState] = []

    async def reached() -> OrderState | None:
        state = await orders.status(order_id)
        last[:] = [state]
        return state if state.status == status else None

    def describe() -> str:
        seen = f"{last[0].status}: {last[0].history}" if last else "never answered"
        return f"order {order_id} reaching {status} (it is {seen})"

    return await eventually(reached, timeout, describe)


async def wait_review(orders: OrderClient, order_id: str, timeout: float = 20.0) -> PendingReview:
    """Wait until the order's review is listed as pending."""

    async def listed() -> PendingReview | None:
        return next((r for r in await orders.pending_reviews() if r.order_id == order_id), None)

    return await eventually(listed, timeout, f"a pending review for order {order_id}")


@dataclass
class PendingOrder:
    """An order started and waiting for its payment."""

    id: str
    handle: WorkflowHandle[OrderWorkflow, OrderResult]
    state: OrderState  # as it reached PENDING_PAYMENT: total, currency, history


async def pending_order(
    orders: OrderClient,
    lines: list[tuple[str, int]],
    *,
    order_id: str | None = None,
    customer_id: str = "cust",
    email: str | None = None,
    **start: Any,
) -> PendingOrder:
    """Start an order of these (sku, quantity) lines and wait until it is PENDING_PAYMENT."""
    order_id = order_id or new_order_id()
    handle = await orders.start_order(
        order_id, customer_id, email or f"{order_id}@example.com", lines, **start
    )
    state = await wait_status(orders, order_id, "PENDING_PAYMENT")
    return PendingOrder(order_id, handle, state)


def stock(engine: Engine, sku: str) -> tuple[int, int]:
    """(on_hand, reserved) of a SKU."""
    with Session(engine) as session:
        product = session.get(Product, sku)
        assert product is not None
        return product.on_hand, product.reserved


def lock_waiters(engine: Engine) -> int:
    """PostgreSQL: sessions of this database waiting for a lock (a row another one holds)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def payments(engine: Engine, order_id: str) -> list[tuple[str, str, float]]:
    """(kind, status, amount) of every payment row of an order, in order."""
    with Session(engine) as session:
        rows = session.exec(
            select(Payment).where(Payment.order_id == order_id).order_by(Payment.id)
        ).all()
    return [(p.kind, p.status, p.amount) for p in rows]


async def erp_received(erp: FakeErp, order_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Wait until the fake ERP has received the order; returns what it received."""

    async def received() -> dict[str, Any] | None:
        return erp.orders.get(order_id)

    return await eventually(received, timeout, f"order {order_id} pushed to the ERP")


async def wait_job(queue: Any, job_id: str, timeout: float = 10.0) -> Any:
    """Wait until a BullMQ job with this id exists and return it."""

    async def fetched() -> Any:
        return await queue.getJob(job_id)

    return await eventually(fetched, timeout, f"job {job_id!r} on queue {queue.name}")


@asynccontextmanager
async def served_ops(
    settings: Settings,
    redis_url: str,
    orders: OrderClient,
    engine: Engine,
    name: str,
    task_queues: Sequence[str] | None = None,
) -> AsyncIterator[tuple[str, Settings, QueueSpec]]:
    """The real HTTP app under uvicorn on a free port, over an email queue of the caller's own
    (and the given Temporal task queues; default: the workers').

    Yields (base URL, the settings it runs with, the queue's spec).
    """
    tag = uuid.uuid4().hex[:8]
    spec = email_spec(settings).with_(prefix=f"t{tag}", name=f"{name}-{tag}", rate_limit=None)
    local = settings.model_copy(
        update={"http_host": "127.0.0.1", "http_port": embedded.free_port()}
    )
    producer = QueueProducer.connect(spec, redis_url)
    app = create_app(
        local,
        producer,
        orders=orders,
        engine=engine,
        queues={spec.name: spec},
        task_queues=task_queues,
    )
    server = http_server(local, app)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(getattr(server, "started", False))

    try:
        await eventually(started, what="the HTTP app listening")
        yield f"http://127.0.0.1:{local.http_port}", local, spec
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await producer.close()


def event_row(engine: Engine, provider: str, event_id: str) -> WebhookEvent:
    """The recorded webhook event of a provider's event id."""
    with Session(engine) as session:
        return session.exec(
            select(WebhookEvent).where(
                WebhookEvent.provider == provider, WebhookEvent.event_id == event_id
            )
        ).one()


async def start_with_payment(
    orders: OrderClient, order_id: str, lines: list[tuple[str, int]], payment: PaymentReceived
) -> WorkflowHandle[OrderWorkflow, OrderResult]:
    """Signal-with-start: the order and a payment that arrives before its stock check answers."""
    order = OrderInput(
        order_id=order_id,
        customer_id="c",
        email=f"{order_id}@example.com",
        items=[OrderLine(sku=sku, quantity=quantity) for sku, quantity in lines],
        policy=policy_from_settings(orders.settings),
    )
    return await orders.client.start_workflow(
        OrderWorkflow.run,
        order,
        id=order_workflow_id(order_id),
        task_queue=orders.task_queue,
        start_signal="payment_received",
        start_signal_args=[payment],
    )


async def own_namespace(client: Client, name: str) -> Client:
    """A client on a fresh namespace of the caller's own (task queues there start empty)."""
    namespace = f"{name}-{uuid.uuid4().hex[:8]}"
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    return await Client.connect(
        client.service_client.config.target_host,
        namespace=namespace,
        data_converter=client.data_converter,  # the suite's codec, as every client has
    )


def wait_until(
    check: Callable[[], object],
    what: str,
    within: float = 30,
    ignoring: tuple[type[BaseException], ...] = (),
) -> None:
    """Block until `check()` is truthy (errors in `ignoring` count as not yet), polling every
    50 ms; AssertionError naming `what` after `within` seconds. For synchronous server setup."""
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except ignoring:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
