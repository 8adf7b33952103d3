"""The stateful money test on the real activities: the same machine as the unit tier's
(tests/money_machine.py), with the real order, payment, inventory, review and mail activities
on the test's databases and the simulated gateway behind a Ledger (the gateway's own record
of money moved). The payments table is checked against that record, not the other way round.

Slower than the unit tier: `make test` runs a few examples, `make test-money` many.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from hypothesis.stateful import invariant, run_state_machine_as_test
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.inventory import InventoryActivities
from activities.notify import NotificationActivities
from activities.order import OrderActivities
from activities.payment import PaymentActivities
from activities.review import ReviewActivities
from app.client import OrderClient
from orderflow.contracts.order import OrderStatus
from orderflow.contracts.payment import (
    Checkout,
    CheckoutRequest,
    GatewayPayment,
    GatewayRequest,
    GatewayResponse,
    HoldStatus,
    PaymentKind,
    PaymentStatus,
)
from orderflow.contracts.review import ReviewInput, ReviewKind, review_workflow_id
from orderflow.db import Order, Payment, Reservation
from orderflow.settings import Settings
from payments.gateway import GatewayConfigError, GatewayUnavailableError, SimulatedGateway
from tests.money_machine import (
    HIGH_PRICE,
    MONEY_TIMEOUT,
    PRICE,
    AnswerLost,
    GatewayDown,
    Ledger,
    MoneyMachine,
    money_settings,
)
from tests.unit.conftest import UNIT_WORKFLOWS, OwnTaskQueue
from workers.temporal import Dependencies
from workflows.review import ManualReviewWorkflow

Catalogue = Callable[..., dict[str, str]]


class LedgerGateway:
    """The simulated gateway, its money movements answered and recorded by a Ledger.

    A lost answer is what a timeout looks like to the activity (GatewayUnavailableError: the
    activity retries with the same key). An outage after the money moved ends the attempt at
    once (raised as the non-retryable error, which is what ten failed tries amount to).
    """

    name = "simulated"

    def __init__(self, engine: Engine, ledger: Ledger) -> None:
        self.simulated = SimulatedGateway(engine)
        self.ledger = ledger

    def _call(self, request: GatewayRequest) -> GatewayResponse:
        try:
            return self.ledger.call(request)
        except AnswerLost as err:
            raise GatewayUnavailableError(
                self.name, request.order_id, request.kind.value, str(err)
            ) from err
        except GatewayDown as err:
            raise GatewayConfigError(self.name, request.order_id, str(err)) from err

    capture = refund = release = _call

    def hold_status(self, request: GatewayRequest) -> HoldStatus:
        return self.ledger.hold_status(request)

    def fetch(self, payment_id: str) -> GatewayPayment | None:
        return self.simulated.fetch(payment_id)

    def list_payments(self, since: datetime) -> list[GatewayPayment]:
        return self.simulated.list_payments(since)

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        return self.simulated.create_checkout(request)


class RealWorld:
    """One worker of every workflow and the real activities, on a task queue of its own."""

    def __init__(
        self, env: WorkflowEnvironment, settings: Settings, deps: Dependencies, catalogue: Catalogue
    ) -> None:
        self.env = env
        self.settings = settings
        self.deps = deps
        self.engine = deps.engine
        self.catalogue = catalogue
        self.ledger = Ledger(provider="simulated")
        self.orders = OrderClient(env.client, settings, self.engine)
        self.high_value = False
        self.skus: dict[str, str] = {}
        self.worker: Worker | None = None
        self.task: asyncio.Task[None] | None = None
        self.order_id = ""

    async def start(self, order_id: str, *, high_value: bool, in_stock: bool) -> None:
        self.order_id = order_id
        self.ledger = Ledger(provider="simulated")
        self.orders = OrderClient(
            self.env.client, self.settings, self.engine, task_queue=f"money-{uuid.uuid4().hex[:8]}"
        )
        stock = 5 if in_stock else 0
        self.skus = await asyncio.to_thread(
            self.catalogue, bag=(PRICE, stock), tv=(HIGH_PRICE, stock)
        )
        self.high_value = high_value
        await self._run_worker(cache=True)

    async def _run_worker(self, cache: bool) -> None:
        engine = self.engine
        orders = OrderActivities(engine, self.deps.erp, currency=self.settings.currency)
        notify = NotificationActivities(engine, self.deps.email_queue)
        payments = PaymentActivities(engine, LedgerGateway(engine, self.ledger))  # type: ignore[arg-type]
        inventory = InventoryActivities(engine)
        reviews = ReviewActivities(engine)
        self.worker = Worker(
            self.env.client,
            task_queue=self.orders.task_queue,
            workflows=UNIT_WORKFLOWS,
            activities=[
                orders.place_order,
                orders.record_payment,
                orders.record_refused_payment,
                orders.confirm_order,
                orders.set_status,
                orders.sync_erp,
                notify.notify,
                payments.call_gateway,
                payments.release,
                payments.hold_status,
                inventory.release_reservation,
                inventory.ship_reservation,
                reviews.open_review,
                reviews.close_review,
            ],
            interceptors=[OwnTaskQueue()],
            activity_executor=ThreadPoolExecutor(max_workers=8),
            max_cached_workflows=1000 if cache else 0,
        )
        self.task = asyncio.create_task(self.worker.run())

    async def stop(self) -> None:
        if self.worker is not None and self.task is not None:
            await self.worker.shutdown()
            await self.task
            self.worker = self.task = None

    async def restart_worker(self, cache: bool) -> None:
        await self.stop()
        await self._run_worker(cache)

    def lines(self, high_value: bool) -> list[tuple[str, int]]:
        return [(self.skus["tv" if high_value else "bag"], 1)]

    async def start_return(self, order_id: str, payment_id: str, total: int) -> str:
        review_id = review_workflow_id(order_id, ReviewKind.RETURN)
        await self.env.client.start_workflow(
            ManualReviewWorkflow.run,
            ReviewInput(
                review_id, order_id, ReviewKind.RETURN, "does not fit", total, "INR", payment_id
            ),
            id=review_id,
            task_queue=self.orders.task_queue,
        )
        return review_id

    def payments(self, order_id: str) -> list[Payment]:
        with Session(self.engine) as session:
            return list(session.exec(select(Payment).where(Payment.order_id == order_id)).all())

    def rows(self, order_id: str) -> set[str]:
        ok = [p for p in self.payments(order_id) if p.status == PaymentStatus.SUCCEEDED]
        return {p.payment_id for p in ok if p.kind == PaymentKind.CAPTURE} | {
            p.refund_of for p in ok if p.kind == PaymentKind.REFUND
        }

    def recorded_status(self, order_id: str) -> OrderStatus | None:
        with Session(self.engine) as session:
            order = session.get(Order, order_id)
        return OrderStatus(order.status) if order else None

    def stock(self, order_id: str) -> str:
        with Session(self.engine) as session:
            held = session.exec(select(Reservation).where(Reservation.order_id == order_id)).all()
        states = {r.status.lower() for r in held}
        assert len(states) <= 1, f"reservation lines of {order_id} disagree: {states}"
        return states.pop() if states else "none"

    def busy(self) -> bool:
        return False  # the activities' work shows as pending activities or workflow tasks


class RealMachine(MoneyMachine):
    """The machine, plus: the payments table agrees with the gateway's record."""

    world: RealWorld

    @invariant()
    def the_payments_table_agrees_with_the_gateway(self) -> None:
        """Every succeeded row is a movement the gateway made, of the same amount."""
        if not self.started:
            return
        self.settle()
        moved = {m.payment_id: m for m in self.world.ledger.movements if m.kind != "hold"}
        for row in self.world.payments(self.order_id):
            if row.status != PaymentStatus.SUCCEEDED:
                continue
            movement = moved.get(row.payment_id)
            assert movement is not None, f"row {row.payment_id} moved nothing; steps {self.steps}"
            assert (movement.amount, movement.currency) == (row.amount, row.currency), (
                f"row {row.payment_id}: {row.amount} {row.currency}, gateway {movement}; "
                f"steps {self.steps}"
            )


@pytest.mark.timeout(MONEY_TIMEOUT)
async def test_money_is_conserved_on_the_real_activities(
    env: WorkflowEnvironment, settings: Settings, deps: Dependencies, catalogue: Catalogue
) -> None:
    """The machine on the real activities and databases, with the simulated gateway's ledger."""
    loop = asyncio.get_running_loop()

    class Machine(RealMachine):
        pass

    Machine.world = RealWorld(env, settings, deps, catalogue)
    Machine.loop = loop
    Machine.abandoned = threading.Event()
    try:
        await asyncio.to_thread(run_state_machine_as_test, Machine, settings=money_settings(4, 10))
    finally:
        Machine.abandoned.set()
