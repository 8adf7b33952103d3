"""The unit tier: the workflows on the time-skipping dev server, every activity a stub.

Nothing here needs Redis, a database, SMTP or the ERP: each test runs one worker of its own on
a unique task queue, with stubs registered under the real activity names. The workflows send
children and activities to the production task queues (payments, reviews, inventory, orders);
`OwnTaskQueue` routes them to the test's queue instead, so one worker serves the whole tree.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    StartChildWorkflowInput,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from app.client import OrderClient
from orderflow.contracts.inventory import ReleaseInput, ReleaseResult, ShipInput
from orderflow.contracts.order import (
    ConfirmInput,
    ConfirmResult,
    ErpSyncResult,
    NotificationKind,
    NotifyInput,
    NotifyResult,
    OrderInput,
    PlaceOrderResult,
    StatusInput,
)
from orderflow.contracts.payment import (
    GatewayRequest,
    GatewayResponse,
    HoldState,
    HoldStatus,
    PaymentKind,
)
from orderflow.contracts.review import ReviewInput, ReviewOutcome
from orderflow.settings import Settings
from workflows.inventory import InventoryReleaseWorkflow
from workflows.order import OrderWorkflow
from workflows.payment import PaymentRetryWorkflow
from workflows.review import ManualReviewWorkflow

UNIT_WORKFLOWS = [
    OrderWorkflow,
    PaymentRetryWorkflow,
    ManualReviewWorkflow,
    InventoryReleaseWorkflow,
]


class OwnTaskQueue(Interceptor):
    """Children and activities run on the starting workflow's own task queue."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _Inbound


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        input.task_queue = None  # None: the workflow's own task queue
        return super().start_activity(input)

    async def start_child_workflow(
        self, input: StartChildWorkflowInput
    ) -> workflow.ChildWorkflowHandle[Any, Any]:
        input.task_queue = None
        return await super().start_child_workflow(input)


@dataclass
class Stubs:
    """Every activity the four workflows call, under its real name; each call is recorded."""

    prices: dict[str, float] = field(default_factory=dict)  # unit price by SKU (default 100)
    in_stock: bool = True
    declines: int = 0  # captures declined before one succeeds
    refund_declines: int = 0  # refunds declined before one succeeds
    captured_holds: set[str] = field(default_factory=set)  # authorisations captured elsewhere
    release_fails: bool = False  # every release raises (the gateway unreachable, a bad key)
    lookup_fails: bool = False  # every hold_status raises too
    # set: every capture waits for it, so a test can act while one is at the gateway
    capture_gate: asyncio.Event | None = None
    capturing: asyncio.Event = field(default_factory=asyncio.Event)  # a capture is in flight
    refused_mail: set[NotificationKind] = field(default_factory=set)  # the queue refuses these
    release_gate: asyncio.Event | None = None  # set: every release waits for it (a slow gateway)
    # this many captures move the money, then every try of their attempt fails (an outage): the
    # attempt ends in an error; the same key asked again later answers what moved
    capture_outage: int = 0
    answered: dict[str, GatewayResponse] = field(default_factory=dict)  # by idempotency key
    landed: list[GatewayRequest] = field(default_factory=list)  # captures of those outages
    releasing: asyncio.Event = field(default_factory=asyncio.Event)  # a release is in flight
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def called(self, name: str) -> list[Any]:
        """The arguments of every call of one activity, in order."""
        return [arg for called, arg in self.calls if called == name]

    def activities(self) -> list[Any]:
        """The stubs to register on a worker."""
        return [
            self.place_order,
            self.record_payment,
            self.record_refused_payment,
            self.confirm_order,
            self.set_status,
            self.sync_erp,
            self.notify,
            self.call_gateway,
            self.release,
            self.hold_status,
            self.open_review,
            self.close_review,
            self.release_reservation,
            self.ship_reservation,
        ]

    @activity.defn(name="place_order")
    async def place_order(self, order: OrderInput) -> PlaceOrderResult:
        self.calls.append(("place_order", order))
        total = sum(self.prices.get(line.sku, 10_000) * line.quantity for line in order.items)
        if not self.in_stock:
            return PlaceOrderResult(
                False, total, "INR", f"not enough stock of {order.items[0].sku}"
            )
        return PlaceOrderResult(True, total, "INR")

    @activity.defn(name="record_payment")
    async def record_payment(self, data: ConfirmInput) -> None:
        self.calls.append(("record_payment", data))

    @activity.defn(name="record_refused_payment")
    async def record_refused_payment(self, data: ConfirmInput) -> None:
        self.calls.append(("record_refused_payment", data))

    @activity.defn(name="confirm_order")
    async def confirm_order(self, data: ConfirmInput) -> ConfirmResult:
        self.calls.append(("confirm_order", data))
        return ConfirmResult(invoice_number=f"INV-{data.order_id}")

    @activity.defn(name="set_status")
    async def set_status(self, data: StatusInput) -> None:
        self.calls.append(("set_status", data))

    @activity.defn(name="sync_erp")
    async def sync_erp(self, order_id: str) -> ErpSyncResult:
        self.calls.append(("sync_erp", order_id))
        return ErpSyncResult(order_id=order_id, target="stub")

    @activity.defn(name="notify")
    async def notify(self, data: NotifyInput) -> NotifyResult:
        self.calls.append(("notify", data))
        if data.kind in self.refused_mail:
            raise ApplicationError(
                f"{data.kind} mail of order {data.order_id} refused by the queue: stub",
                type="MailRefused",
                non_retryable=True,
            )
        return NotifyResult(job_id=f"{data.kind.value}-{data.order_id}", channel="stub")

    @activity.defn(name="call_gateway")
    async def call_gateway(self, request: GatewayRequest) -> GatewayResponse:
        self.calls.append(("call_gateway", request))
        captures = len([r for r in self.called("call_gateway") if r.kind is PaymentKind.CAPTURE])
        refunds = len([r for r in self.called("call_gateway") if r.kind is PaymentKind.REFUND])
        if request.kind is PaymentKind.CAPTURE and self.capture_gate is not None:
            self.capturing.set()
            await self.capture_gate.wait()
        if request.idempotency_key in self.answered:
            return self.answered[request.idempotency_key]
        if request.kind is PaymentKind.CAPTURE and captures <= self.declines:
            return GatewayResponse(succeeded=False, detail="declined", provider="stub")
        if request.kind is PaymentKind.CAPTURE and self.capture_outage > 0:
            self.capture_outage -= 1
            self.landed.append(request)
            self.answered[request.idempotency_key] = GatewayResponse(
                succeeded=True, payment_id=f"capture-{request.idempotency_key}", provider="stub"
            )
            raise ApplicationError(
                f"gateway unreachable after capture {request.idempotency_key} was sent",
                type="GatewayUnavailable",
                non_retryable=True,
            )
        if request.kind is PaymentKind.REFUND and refunds <= self.refund_declines:
            return GatewayResponse(succeeded=False, detail="refund declined", provider="stub")
        return GatewayResponse(
            succeeded=True,
            payment_id=f"{request.kind.value}-{request.order_id}-{request.attempt}",
            provider="stub",
        )

    @activity.defn(name="release")
    async def release(self, request: GatewayRequest) -> GatewayResponse:
        self.calls.append(("release", request))
        if self.release_gate is not None:
            self.releasing.set()
            await self.release_gate.wait()
        if self.release_fails:
            raise ApplicationError(f"release of {request.payment_id} refused", non_retryable=True)
        if request.payment_id in self.captured_holds:  # the gateway has taken it: refund it
            return GatewayResponse(
                succeeded=False, detail=f"{request.payment_id} is captured", provider="stub"
            )
        return GatewayResponse(succeeded=True, payment_id=request.payment_id, provider="stub")

    @activity.defn(name="hold_status")
    async def hold_status(self, request: GatewayRequest) -> HoldStatus:
        """A hold in `captured_holds` was captured whole; any other one was released."""
        self.calls.append(("hold_status", request))
        if self.lookup_fails:
            raise ApplicationError(f"lookup of {request.payment_id} refused", non_retryable=True)
        if request.payment_id in self.captured_holds:
            return HoldStatus(
                request.payment_id, HoldState.CAPTURED, request.amount, 0, request.currency
            )
        return HoldStatus(request.payment_id, HoldState.RELEASED, currency=request.currency)

    @activity.defn(name="open_review")
    async def open_review(self, data: ReviewInput) -> None:
        self.calls.append(("open_review", data))

    @activity.defn(name="close_review")
    async def close_review(self, outcome: ReviewOutcome) -> None:
        self.calls.append(("close_review", outcome))

    @activity.defn(name="release_reservation")
    async def release_reservation(self, data: ReleaseInput) -> ReleaseResult:
        self.calls.append(("release_reservation", data))
        return ReleaseResult(order_id=data.order_id, released_lines=1, released_units=1)

    @activity.defn(name="ship_reservation")
    async def ship_reservation(self, data: ShipInput) -> ReleaseResult:
        self.calls.append(("ship_reservation", data))
        return ReleaseResult(order_id=data.order_id, released_lines=1, released_units=1)


@pytest.fixture
def stubs() -> Stubs:
    """This test's activity stubs."""
    return Stubs()


def unit_client(env: WorkflowEnvironment) -> OrderClient:
    """An OrderClient on a new task queue of its own (no worker serves it yet)."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # the seed's policy, no .env
    return OrderClient(env.client, settings, task_queue=f"unit-{uuid.uuid4().hex[:10]}")


def stub_worker(
    env: WorkflowEnvironment, stubs: Stubs, task_queue: str, *, cache: bool = True
) -> Worker:
    """The one worker of a unit test: every workflow, the stubs, children on the same queue.

    cache=False: no workflow stays in memory, so every task replays its history (a restart).
    """
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=UNIT_WORKFLOWS,
        activities=stubs.activities(),
        interceptors=[OwnTaskQueue()],
        **({} if cache else {"max_cached_workflows": 0}),
    )


@pytest.fixture
async def unit_orders(env: WorkflowEnvironment, stubs: Stubs) -> AsyncIterator[OrderClient]:
    """An OrderClient on a task queue of this test's own, served by one worker of stubs."""
    orders = unit_client(env)
    async with stub_worker(env, stubs, orders.task_queue):
        yield orders
