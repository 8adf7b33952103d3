"""The stateful money test on the unit tier: the workflows on the time-skipping server, the
activities stubbed, the gateway a ledger of real money movements (tests/money_machine.py).

`make test` runs it at about a minute; ORDERFLOW_MONEY_EXAMPLES (and _STEPS) run it longer
(`make test-money`).
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis.stateful import run_state_machine_as_test
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.client import OrderClient
from orderflow.contracts.inventory import ReleaseInput, ReleaseResult, ShipInput
from orderflow.contracts.order import (
    ConfirmInput,
    OrderInput,
    OrderStatus,
    PlaceOrderResult,
    StatusInput,
)
from orderflow.contracts.payment import GatewayRequest, GatewayResponse, HoldStatus, PaymentKind
from orderflow.contracts.review import ReviewInput, ReviewKind, review_workflow_id
from tests.money_machine import (
    HIGH_PRICE,
    MONEY_TIMEOUT,
    PRICE,
    GatewayDown,
    Ledger,
    MoneyMachine,
    money_settings,
)
from tests.unit.conftest import UNIT_WORKFLOWS, OwnTaskQueue, Stubs, unit_client
from workflows.review import ManualReviewWorkflow


class LedgerStubs(Stubs):
    """The unit tier's stubs with the gateway calls answered by a Ledger, and stock tracked.

    The stubbed call_gateway stands for the activity and the gateway together: it finds an
    earlier attempt's result (`Ledger.finds_earlier`), as the activity's lookup promises.
    """

    def __init__(self, ledger: Ledger, in_stock: bool) -> None:
        super().__init__(prices={"bag": PRICE, "tv": HIGH_PRICE}, in_stock=in_stock)
        self.ledger = ledger
        self.reservation = "none"
        self.stock_errors: list[str] = []
        self.answered: list[tuple[GatewayRequest, GatewayResponse]] = []
        self.running = 0

    @activity.defn(name="place_order")
    async def place_order(self, order: OrderInput) -> PlaceOrderResult:
        self.running += 1
        try:
            placed = await super().place_order(order)
            if placed.reserved:
                self.reservation = "reserved"
            return placed
        finally:
            self.running -= 1

    @activity.defn(name="call_gateway")
    async def call_gateway(self, request: GatewayRequest) -> GatewayResponse:
        self.calls.append(("call_gateway", request))
        try:
            answer = self.ledger.call(request)
        except GatewayDown as err:  # every try of the attempt failed: it ends in an error
            raise ApplicationError(str(err), type="GatewayUnavailable", non_retryable=True) from err
        self.answered.append((request, answer))
        return answer

    @activity.defn(name="release")
    async def release(self, request: GatewayRequest) -> GatewayResponse:
        self.calls.append(("release", request))
        return self.ledger.call(request)

    @activity.defn(name="hold_status")
    async def hold_status(self, request: GatewayRequest) -> HoldStatus:
        self.calls.append(("hold_status", request))
        return self.ledger.hold_status(request)

    @activity.defn(name="release_reservation")
    async def release_reservation(self, data: ReleaseInput) -> ReleaseResult:
        self.calls.append(("release_reservation", data))
        if self.reservation == "shipped":
            self.stock_errors.append("released a shipped reservation")
        elif self.reservation == "reserved":
            self.reservation = "released"
        return ReleaseResult(order_id=data.order_id, released_lines=1, released_units=1)

    @activity.defn(name="ship_reservation")
    async def ship_reservation(self, data: ShipInput) -> ReleaseResult:
        self.calls.append(("ship_reservation", data))
        if self.reservation != "reserved" and self.reservation != "shipped":
            self.stock_errors.append(f"shipped a reservation that is {self.reservation}")
        self.reservation = "shipped"
        return ReleaseResult(order_id=data.order_id, released_lines=1, released_units=1)


class UnitWorld:
    """One worker of LedgerStubs on a task queue of the example's own."""

    def __init__(self, env: WorkflowEnvironment) -> None:
        self.env = env
        self.orders: OrderClient = unit_client(env)
        self.ledger = Ledger(finds_earlier=True, provider="stub")
        self.stubs = LedgerStubs(self.ledger, True)
        self.high_value = False
        self.worker: Worker | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, order_id: str, *, high_value: bool, in_stock: bool) -> None:
        self.orders = unit_client(self.env)
        self.ledger = Ledger(finds_earlier=True, provider="stub")
        self.stubs = LedgerStubs(self.ledger, in_stock)
        self.high_value = high_value
        await self._run_worker(cache=True)

    async def _run_worker(self, cache: bool) -> None:
        self.worker = Worker(
            self.env.client,
            task_queue=self.orders.task_queue,
            workflows=UNIT_WORKFLOWS,
            activities=self.stubs.activities(),
            interceptors=[OwnTaskQueue()],
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
        return [("tv" if high_value else "bag", 1)]

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

    def rows(self, order_id: str) -> set[str]:
        kept = {
            data.payment.payment_id
            for name, data in self.stubs.calls
            if name in ("record_payment", "confirm_order") and isinstance(data, ConfirmInput)
        }
        given = {
            request.payment_id if request.kind is PaymentKind.REFUND else answer.payment_id
            for request, answer in self.stubs.answered
            if answer.succeeded
        }
        return kept | given

    def recorded_status(self, order_id: str) -> OrderStatus | None:
        statuses = [s.status for s in self.stubs.called("set_status") if isinstance(s, StatusInput)]
        return statuses[-1] if statuses else None

    def stock(self, order_id: str) -> str:
        assert not self.stubs.stock_errors, self.stubs.stock_errors
        return self.stubs.reservation

    def busy(self) -> bool:
        return self.stubs.running > 0


@pytest.mark.timeout(MONEY_TIMEOUT)
async def test_money_is_conserved_whatever_happens_to_an_order(env: WorkflowEnvironment) -> None:
    """Any sequence of payments, failures, decisions, faults and restarts keeps the ledger right."""
    loop = asyncio.get_running_loop()

    class Machine(MoneyMachine):
        pass

    Machine.world = UnitWorld(env)
    Machine.loop = loop
    Machine.abandoned = threading.Event()
    try:
        await asyncio.to_thread(run_state_machine_as_test, Machine, settings=money_settings(8, 10))
    finally:
        Machine.abandoned.set()
