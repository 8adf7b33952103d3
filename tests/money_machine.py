"""The stateful money test (issue 18): everything that can happen to an order, in any order.

A Hypothesis `RuleBasedStateMachine` drives one order per example through payments (right,
short, over, other currency, duplicate, early by signal-with-start, authorisations), failed
payments, Radar flags, cancels, review decisions, shipment, return, refund declines, gateway
answers lost after the money moved, worker restarts and hours passing. A `Ledger` is the
gateway's own record of every movement of money; after every rule the order is let settle
(no workflow task, activity or child start pending anywhere in its tree) and the invariants
are checked against the ledger, never against what the workflow believes.

The machine is synchronous (Hypothesis); the Temporal client and worker live on the test's
event loop (pytest-asyncio's session loop, where the session `env` was made). The test runs
the machine in a worker thread (`asyncio.to_thread`) and every coroutine is submitted to the
test's loop with `asyncio.run_coroutine_threadsafe`, so nothing crosses loops.

Two worlds run the same machine: stubbed activities on the time-skipping server
(tests/unit/test_money_stateful.py) and the real activities with the simulated gateway
(tests/test_money_stateful.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from orderflow.contracts.order import (
    OrderState,
    OrderStatus,
    PaymentFailed,
    PaymentReceived,
    Shipment,
)
from orderflow.contracts.payment import (
    GatewayRequest,
    GatewayResponse,
    HoldState,
    HoldStatus,
    PaymentKind,
)
from orderflow.contracts.review import ReviewDecision
from orderflow.errors import OrderClosedError

T = TypeVar("T")
VERBOSE = bool(os.environ.get("ORDERFLOW_MONEY_VERBOSE"))

CURRENCY = "INR"
PRICE = 10_000  # one unit of the cheap SKU: ₹100.00
HIGH_PRICE = 6_500_000  # above the seed's ₹50,000 high-value threshold: reviewed
CALL_TIMEOUT = 120.0  # seconds one coroutine of the machine may take (settling included)
SETTLE_WITHIN = 60.0
FAST_FORWARD_WITHIN = 20.0  # seconds of wall time a fast-forward of an idle workflow may take  # an order that is still busy after this is waiting forever
OPEN = WorkflowExecutionStatus.RUNNING
BROKEN = {
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
}


# seconds one machine test may take: a slow machine's minute is three; `make test-money` an hour
MONEY_TIMEOUT = 3600 if os.environ.get("ORDERFLOW_MONEY_EXAMPLES") else 900


def money_settings(default_examples: int, default_steps: int) -> settings:
    """Hypothesis settings of one machine: ORDERFLOW_MONEY_EXAMPLES / _STEPS make it run longer."""
    return settings(
        max_examples=int(os.environ.get("ORDERFLOW_MONEY_EXAMPLES", default_examples)),
        stateful_step_count=int(os.environ.get("ORDERFLOW_MONEY_STEPS", default_steps)),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,  # a failure depends on timing too: its replay is the shrunk sequence
        # `make test` runs the same sequences every time (a CI run fails on the code, not on a
        # draw); `make test-money` draws new ones (ORDERFLOW_MONEY_RANDOM=1)
        derandomize=not os.environ.get("ORDERFLOW_MONEY_RANDOM"),
        print_blob=True,
        report_multiple_bugs=False,
        # shrinking replays the machine hundreds of times (seconds each): only when asked
        phases=[Phase.explicit, Phase.reuse, Phase.generate]
        + ([Phase.shrink] if os.environ.get("ORDERFLOW_MONEY_SHRINK") else []),
    )


# --- the gateway's own record ---


class AnswerLost(Exception):
    """The gateway moved the money, and its answer never reached us (a timeout, a reset)."""


@dataclass
class Movement:
    """One movement of money (or of a hold) at the gateway."""

    kind: str  # capture | refund | hold | release
    payment_id: str  # capture/hold: the payment's id; refund: the refund's id
    amount: int  # minor units of `currency`
    currency: str
    key: str = ""  # the idempotency key it moved under ("": the customer paid at checkout)
    of: str = ""  # refund: the payment given back; release/capture of a hold: the hold


@dataclass
class Ledger:
    """The gateway's record: every capture, refund, hold and release, by id, amount and key.

    Like Stripe's and Razorpay's, a call under a key that already moved money answers that
    movement again and moves nothing; a refund beyond what is left of a payment is declined.
    `lose` and `outage` script the next calls of a kind: `lose` moves the money and raises a
    retryable error (the answer was lost); `outage` moves it and then fails every try of the
    attempt, so the attempt ends in a gateway error. `declines` declines that many calls.
    `finds_earlier`: the activity's earlier-result lookup is modelled here (unit tier): an
    attempt finds what an earlier attempt of the same retries (key stem) moved.
    """

    movements: list[Movement] = field(default_factory=list)
    answers: dict[str, GatewayResponse] = field(default_factory=dict)
    lose: dict[str, int] = field(default_factory=dict)
    outage: dict[str, int] = field(default_factory=dict)
    declines: dict[str, int] = field(default_factory=dict)
    calls: list[GatewayRequest] = field(default_factory=list)
    finds_earlier: bool = False
    provider: str = "ledger"
    lock: threading.RLock = field(default_factory=threading.RLock)

    # --- the customer's side: money that moved at checkout, before any webhook ---

    def customer_pays(self, payment_id: str, amount: int, currency: str) -> None:
        """The customer paid at the gateway (a redelivery of the same id moves nothing)."""
        with self.lock:
            if not any(m.payment_id == payment_id for m in self.movements):
                self.movements.append(Movement("capture", payment_id, amount, currency))

    def customer_holds(self, payment_id: str, amount: int, currency: str) -> None:
        """The customer authorised a payment (manual capture): the money is held, not taken."""
        with self.lock:
            if not any(m.payment_id == payment_id for m in self.movements):
                self.movements.append(Movement("hold", payment_id, amount, currency))

    # --- reads ---

    def of_kind(self, kind: str) -> list[Movement]:
        """Every movement of one kind."""
        with self.lock:
            return [m for m in self.movements if m.kind == kind]

    def captured(self, payment_id: str) -> int:
        """What was taken under a payment id."""
        return sum(m.amount for m in self.of_kind("capture") if m.payment_id == payment_id)

    def refunded(self, payment_id: str) -> int:
        """What was given back of a payment."""
        return sum(m.amount for m in self.of_kind("refund") if m.of == payment_id)

    def hold(self, payment_id: str) -> Movement | None:
        """The hold of this id, if it is one."""
        return next((m for m in self.of_kind("hold") if m.payment_id == payment_id), None)

    def hold_state(self, payment_id: str) -> str:
        """held, captured or released."""
        if any(m.payment_id == payment_id for m in self.of_kind("capture")):
            return "captured"
        if any(m.of == payment_id for m in self.of_kind("release")):
            return "released"
        return "held"

    def hold_status(self, request: GatewayRequest) -> HoldStatus:
        """What became of a hold, as a gateway's lookup answers it (the workflow asks this
        when a release of the hold failed)."""
        with self.lock:
            held = self.hold(request.payment_id)
            if held is None:
                return HoldStatus(request.payment_id, HoldState.UNKNOWN, detail="no such hold")
            state = HoldState(self.hold_state(held.payment_id))
            return HoldStatus(
                held.payment_id,
                state,
                self.captured(held.payment_id),
                self.refunded(held.payment_id),
                held.currency,
                detail=f"ledger: {state.value}",
            )

    # --- the gateway's API ---

    def call(self, request: GatewayRequest) -> GatewayResponse:
        """Capture, refund or release as a real gateway would, scripted faults included."""
        with self.lock:
            self.calls.append(request)
            answer = self.answers.get(request.idempotency_key)
            if answer is None and self.finds_earlier:
                answer = self._earlier(request)
            if answer is not None:
                return answer
            kind = request.kind.value
            if self.declines.get(kind, 0) > 0 and request.kind is not PaymentKind.RELEASE:
                self.declines[kind] -= 1
                answer = GatewayResponse(False, detail=f"{kind} declined (scripted)")
            elif request.kind is PaymentKind.CAPTURE:
                answer = self._capture(request)
            elif request.kind is PaymentKind.REFUND:
                answer = self._refund(request)
            else:
                answer = self._release(request)
            answer.provider = self.provider
            self.answers[request.idempotency_key] = answer
            if self.outage.get(kind, 0) > 0:
                self.outage[kind] -= 1
                raise GatewayDown(request.idempotency_key)
            if self.lose.get(kind, 0) > 0:
                self.lose[kind] -= 1
                raise AnswerLost(f"answer to {request.idempotency_key} lost")
            return answer

    def _earlier(self, request: GatewayRequest) -> GatewayResponse | None:
        stem = request.idempotency_key.rsplit("-", 1)[0]
        for key, answer in self.answers.items():
            if answer.succeeded and key.rsplit("-", 1)[0] == stem:
                return answer
        return None

    def _capture(self, request: GatewayRequest) -> GatewayResponse:
        held = self.hold(request.payment_id) if request.payment_id else None
        if held is not None:
            state = self.hold_state(held.payment_id)
            if state != "held":
                return GatewayResponse(False, detail=f"hold {held.payment_id} is {state}")
            if request.amount > held.amount or request.currency != held.currency:
                return GatewayResponse(False, detail=f"hold {held.payment_id} does not cover it")
            self.movements.append(
                Movement(
                    "capture",
                    held.payment_id,
                    request.amount,
                    request.currency,
                    request.idempotency_key,
                    held.payment_id,
                )
            )
            return GatewayResponse(True, payment_id=held.payment_id, detail="captured hold")
        charge = f"ch_{request.idempotency_key}"
        self.movements.append(
            Movement("capture", charge, request.amount, request.currency, request.idempotency_key)
        )
        return GatewayResponse(True, payment_id=charge, detail="charged")

    def _refund(self, request: GatewayRequest) -> GatewayResponse:
        of = request.payment_id
        taken = [m for m in self.movements if m.kind == "capture" and m.payment_id == of]
        if not taken:
            return GatewayResponse(False, detail=f"no such charge: {of!r}")
        if request.currency != taken[0].currency:
            return GatewayResponse(False, detail=f"{of} was paid in {taken[0].currency}")
        left = sum(m.amount for m in taken) - sum(
            m.amount for m in self.movements if m.kind == "refund" and m.of == of
        )
        if request.amount > left:
            return GatewayResponse(
                False, detail=f"refund of {request.amount} exceeds the {left} left of {of}"
            )
        refund = f"re_{request.idempotency_key}"
        self.movements.append(
            Movement(
                "refund", refund, request.amount, request.currency, request.idempotency_key, of
            )
        )
        return GatewayResponse(True, payment_id=refund, detail="refunded")

    def _release(self, request: GatewayRequest) -> GatewayResponse:
        held = self.hold(request.payment_id)
        if held is None:
            return GatewayResponse(False, detail=f"no such hold: {request.payment_id!r}")
        state = self.hold_state(held.payment_id)
        if state == "captured":
            return GatewayResponse(False, detail=f"{held.payment_id} is captured")
        if state == "held":
            self.movements.append(
                Movement(
                    "release", held.payment_id, held.amount, held.currency,
                    request.idempotency_key, held.payment_id,
                )
            )  # fmt: skip
        return GatewayResponse(True, payment_id=held.payment_id, detail="released")


class GatewayDown(Exception):
    """Every try of an attempt failed after its first call had moved the money."""

    def __init__(self, key: str) -> None:
        super().__init__(f"gateway unreachable for every try of {key} (its first call landed)")
        self.key = key


# --- what differs between the tiers ---


class World(Protocol):
    """The tier the machine runs on: its workers, its ledger, its rows and its stock."""

    env: WorkflowEnvironment
    orders: OrderClient
    ledger: Ledger
    high_value: bool

    async def start(self, order_id: str, *, high_value: bool, in_stock: bool) -> None:
        """A fresh ledger, price list and worker(s) for one example."""
        ...

    async def stop(self) -> None:
        """Stop the example's worker(s)."""
        ...

    async def restart_worker(self, cache: bool) -> None:
        """Stop the worker(s) and start new ones: every open workflow replays its history."""
        ...

    def lines(self, high_value: bool) -> list[tuple[str, int]]:
        """The order's lines."""
        ...

    async def start_return(self, order_id: str, payment_id: str, total: int) -> str:
        """Open the return review of a shipped order; returns its workflow id."""
        ...

    def rows(self, order_id: str) -> set[str]:
        """The payment ids our side recorded for the order (captures kept, refunds given)."""
        ...

    def recorded_status(self, order_id: str) -> OrderStatus | None:
        """The status our database shows (a return changes it after the workflow ended)."""
        ...

    def stock(self, order_id: str) -> str:
        """none, reserved, released or shipped; raises AssertionError on a double move."""
        ...

    def busy(self) -> bool:
        """An activity of the example's worker is running right now."""
        ...


# --- the machine ---


@dataclass
class Reported:
    """A payment the machine reported to the order, and the order's answer."""

    payment_id: str
    amount: int
    currency: str
    held: bool
    accepted: bool | None  # None: by signal-with-start, no answer
    reason: str = ""


class MoneyMachine(RuleBasedStateMachine):
    """One order, any sequence of what can happen to it; the gateway's record is the truth."""

    world: World
    loop: asyncio.AbstractEventLoop
    # set when the test's coroutine ends however it ends, so the machine's thread (which
    # `asyncio.to_thread` cannot cancel) stops instead of driving the shared loop on
    abandoned: threading.Event
    counter = 0

    def __init__(self) -> None:
        super().__init__()
        MoneyMachine.counter += 1
        self.order_id = f"m{os.getpid()}-{MoneyMachine.counter}-{os.urandom(3).hex()}"
        self.total = 0
        self.reported: list[Reported] = []
        self.flagged_before_decision = False
        self.return_review = ""
        self.return_decided = False
        self.started = False
        self.steps: list[str] = []

    # --- plumbing ---

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one coroutine on the test's event loop and wait for it."""
        if self.abandoned.is_set():  # the test ended (a timeout): stop here, touch nothing more
            coro.close()
            raise RuntimeError("the money test ended; this machine stops")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT)

    @property
    def orders(self) -> OrderClient:
        return self.world.orders

    @property
    def client(self) -> Client:
        return self.world.orders.client

    def handle(self) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(f"order-{self.order_id}")

    async def _tree(self) -> list[tuple[WorkflowHandle[Any, Any], Any]]:
        """The order's workflow, its children (and theirs) and a return review: (handle, describe)."""
        found: list[tuple[WorkflowHandle[Any, Any], Any]] = []
        todo = [f"order-{self.order_id}"] + ([self.return_review] if self.return_review else [])
        seen: set[str] = set()
        while todo:
            workflow_id = todo.pop()
            if workflow_id in seen:
                continue
            seen.add(workflow_id)
            handle = self.client.get_workflow_handle(workflow_id)
            try:
                desc = await handle.describe()
            except RPCError as err:
                if err.status is RPCStatusCode.NOT_FOUND:
                    continue
                raise
            found.append((handle, desc))
            todo += [c.workflow_id for c in desc.raw_description.pending_children]
        return found

    async def _settle(self) -> OrderState:
        """Wait until nothing in the order's tree is running, then return its state.

        Idle: no workflow task and no activity running or due anywhere in the tree, no child
        being started, no stub running, and the same answer to the status query twice. An
        activity waiting out a retry backoff is fast-forwarded past it (the workflow's clock
        only). Timers (the auto-cancel, the hour between payment attempts) are left alone.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_WITHIN
        last: tuple[Any, ...] | None = None
        why = ""
        while True:
            tree = await self._tree()
            busy = self.world.busy()
            why = "an activity running" if busy else ""
            for handle, desc in tree:
                raw = desc.raw_description
                if desc.status in BROKEN:
                    raise AssertionError(f"{handle.id} ended {desc.status.name}: {self.steps}")
                if desc.status is not OPEN:
                    continue
                if raw.HasField("pending_workflow_task"):
                    busy, why = True, f"{handle.id}: a workflow task"
                for child in raw.pending_children:
                    if not child.run_id:
                        busy, why = True, f"{handle.id}: starting {child.workflow_id}"
                for act in raw.pending_activities:
                    busy, why = True, f"{handle.id}: activity {act.activity_type.name}"
                    if act.attempt > 1 and act.HasField("next_attempt_schedule_time"):
                        await self._fast_forward(handle, timedelta(seconds=65))
            state = await self._state()
            if not busy:
                seen = (state.status, len(state.history), state.payment_id)
                if seen == last:
                    return state
                last = seen
            else:
                last = None
            if loop.time() > deadline:
                raise AssertionError(
                    f"order {self.order_id} never settled within {SETTLE_WITHIN}s ({why}); "
                    f"it is {state.status}: {[h.note for h in state.history][-4:]}; "
                    f"steps {self.steps}"
                )
            await asyncio.sleep(0.05)  # the poll interval while the tree works

    async def _state(self) -> OrderState:
        return await self.orders.status(self.order_id)

    def settle(self) -> OrderState:
        """Let the order settle (see `_settle`)."""
        return self.run(self._settle())

    def note(self, step: str) -> None:
        self.steps.append(step)
        if VERBOSE:
            print(f"[{self.order_id}] {step}", file=sys.stderr, flush=True)

    # --- the order ---

    @initialize(
        high_value=st.booleans(),
        early=st.sampled_from(["none", "none", "right", "short", "flagged", "hold"]),
        in_stock=st.integers(0, 9).map(lambda n: n > 0),  # out of stock one time in ten
    )
    def place(self, high_value: bool, early: str, in_stock: bool) -> None:
        """A new order (high-value: reviewed), perhaps paid before its stock check answers."""
        self.total = HIGH_PRICE if high_value else PRICE
        self.note(f"place(high_value={high_value}, early={early}, in_stock={in_stock})")
        self.run(self.world.start(self.order_id, high_value=high_value, in_stock=in_stock))
        self.started = True
        lines = self.world.lines(high_value)
        if early == "none":
            self.run(self.orders.start_order(self.order_id, "cust", "c@example.com", lines))
        else:
            amount = self.total - 1 if early == "short" else self.total
            payment = self._payment("early", amount, CURRENCY, held=early == "hold")
            payment.flagged = early == "flagged"
            self.flagged_before_decision = payment.flagged
            self.run(self._start_with(payment, lines))
        self.settle()

    async def _start_with(self, payment: PaymentReceived, lines: list[tuple[str, int]]) -> None:
        from tests.helpers import start_with_payment

        await start_with_payment(self.orders, self.order_id, lines, payment)

    def _payment(self, tag: str, amount: int, currency: str, *, held: bool) -> PaymentReceived:
        """A payment the customer made at the gateway (in the ledger now), to be reported."""
        payment_id = f"pay_{tag}_{len(self.reported)}_{self.order_id}"
        if held:
            self.world.ledger.customer_holds(payment_id, amount, currency)
        else:
            self.world.ledger.customer_pays(payment_id, amount, currency)
        self.reported.append(Reported(payment_id, amount, currency, held, None))
        return PaymentReceived(
            payment_id=payment_id,
            amount=amount,
            provider=self.world.ledger.provider,
            currency=currency,
            authorised_only=held,
        )

    async def _report(self, payment: PaymentReceived) -> None:
        ack = await self.orders.payment_received(self.order_id, payment)
        for r in self.reported:
            if r.payment_id == payment.payment_id and r.accepted is not False:
                r.accepted, r.reason = ack.accepted, ack.reason

    # --- rules ---

    @rule(
        how=st.sampled_from(["right", "right", "short", "over", "other currency"]),
        held=st.booleans(),
        flagged=st.booleans(),
    )
    def pay(self, how: str, held: bool, flagged: bool) -> None:
        """The customer pays (or authorises); the gateway's webhook reports it."""
        amount = {"short": self.total - 1, "over": self.total + 1}.get(how, self.total)
        currency = "USD" if how == "other currency" else CURRENCY
        self.note(f"pay({how}, held={held}, flagged={flagged})")
        payment = self._payment("p", amount, currency, held=held)
        payment.flagged = flagged
        state = self.run(self._state())
        self.run(self._report(payment))
        accepted = self.reported[-1].accepted
        if (
            flagged
            and accepted
            and state.status
            in (
                OrderStatus.NEW,
                OrderStatus.PENDING_PAYMENT,
                OrderStatus.PAYMENT_RETRYING,
            )
        ):
            self.flagged_before_decision = True  # the order's own payment, flagged
        self.settle()

    @precondition(lambda self: bool(self.reported))
    @rule(which=st.integers(0, 10), flagged=st.booleans())
    def redeliver(self, which: int, flagged: bool) -> None:
        """The gateway delivers a payment's webhook again (Radar's flag may come with it)."""
        r = self.reported[which % len(self.reported)]
        self.note(
            f"redeliver({r.payment_id.split('_')[1]}#{which % len(self.reported)}, flagged={flagged})"
        )
        state = self.run(self._state())
        if (
            flagged
            and state.payment_id == r.payment_id
            and state.status
            in (
                OrderStatus.NEW,
                OrderStatus.PENDING_PAYMENT,
                OrderStatus.PAYMENT_RETRYING,
            )
        ):
            self.flagged_before_decision = True
        payment = PaymentReceived(
            r.payment_id, r.amount, self.world.ledger.provider, flagged, r.currency, r.held
        )
        self.run(self.orders.payment_received(self.order_id, payment))
        self.settle()

    @rule(declines=st.integers(0, 3))
    def payment_fails(self, declines: int) -> None:
        """A capture failed at the gateway; the order's retries meet `declines` declines."""
        self.note(f"payment_fails(declines={declines})")
        self.world.ledger.declines["capture"] = declines
        n = len(self.steps)
        failure = PaymentFailed(f"pf_{n}_{self.order_id}", "card declined", attempt_id=f"ch_{n}")
        self.run(self._signal(self.orders.payment_failed(self.order_id, failure)))
        self.settle()

    async def _signal(self, sent: Coroutine[Any, Any, None]) -> None:
        try:
            await sent
        except OrderClosedError:  # the workflow has ended: nothing listens
            pass
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise

    @rule()
    def cancel(self) -> None:
        """The customer cancels."""
        self.note("cancel")
        self.run(self._signal(self.orders.cancel(self.order_id, "changed my mind")))
        self.settle()

    @rule(approve=st.booleans())
    def decide(self, approve: bool) -> None:
        """An admin decides the open review (the order's, or a return's)."""
        self.note(f"decide(approve={approve})")
        self.run(self._decide(approve))
        self.settle()

    async def _decide(self, approve: bool) -> None:
        state = await self._state()
        review = self.return_review if self.return_review else state.review_id
        if not review or (review == state.review_id and state.status != OrderStatus.IN_REVIEW):
            return
        try:
            await self.orders.decide_review(review, ReviewDecision(approve, "qa"))
        except Exception as err:  # decided already, or closed: nothing to decide
            if "already decided" not in str(err) and "Unknown" not in type(err).__name__:
                raise
            return
        if review == self.return_review:
            self.return_decided = True

    @rule()
    def withdraw(self) -> None:
        """The open review is withdrawn (what the order does when it is cancelled)."""
        self.note("withdraw")
        self.run(self._withdraw())
        self.settle()

    async def _withdraw(self) -> None:
        from workflows.review import ManualReviewWorkflow

        state = await self._state()
        if state.review_id and state.status == OrderStatus.IN_REVIEW:
            handle = self.client.get_workflow_handle(state.review_id)
            await self._signal(handle.signal(ManualReviewWorkflow.withdraw, "withdrawn by qa"))

    @rule()
    def ship(self) -> None:
        """The warehouse ships."""
        self.note("ship")
        self.run(self._signal(self.orders.shipped(self.order_id, Shipment("DTDC", "X1"))))
        self.settle()

    @rule()
    def request_return(self) -> None:
        """The customer asks to return a shipped order (a review; approval refunds it)."""
        state = self.settle()
        if state.status != OrderStatus.SHIPPED or self.return_review:
            return
        self.note("request_return")
        self.return_review = self.run(
            self.world.start_return(self.order_id, state.payment_id, self.total)
        )
        self.settle()

    @rule(kind=st.sampled_from(["refund", "capture"]), n=st.integers(1, 4))
    def gateway_declines(self, kind: str, n: int) -> None:
        """The gateway will decline the next `n` calls of a kind."""
        self.note(f"gateway_declines({kind}, {n})")
        self.world.ledger.declines[kind] = n

    @rule(kind=st.sampled_from(["capture", "refund", "release"]))
    def answer_lost(self, kind: str) -> None:
        """The next call of a kind moves the money and its answer is lost (retried)."""
        self.note(f"answer_lost({kind})")
        self.world.ledger.lose[kind] = self.world.ledger.lose.get(kind, 0) + 1

    @rule(kind=st.sampled_from(["capture", "refund"]))
    def gateway_down_after_move(self, kind: str) -> None:
        """The next call of a kind moves the money, then every try of its attempt fails."""
        self.note(f"gateway_down_after_move({kind})")
        self.world.ledger.outage[kind] = self.world.ledger.outage.get(kind, 0) + 1

    @rule(cache=st.booleans())
    def restart_worker(self, cache: bool) -> None:
        """The worker restarts: every open workflow replays on a new one."""
        self.note(f"restart_worker(cache={cache})")
        self.run(self.world.restart_worker(cache))
        self.settle()

    @rule()
    def an_hour_passes(self) -> None:
        """An hour passes for the order and every child it has running."""
        self.note("an_hour_passes")
        self.run(self._an_hour())
        self.settle()

    @rule()
    def a_day_passes(self) -> None:
        """Hours pass until nothing of the order waits on a timer (every retry runs out)."""
        self.note("a_day_passes")
        for _ in range(6):  # the seed's three retries an hour apart, with room to spare
            self.run(self._an_hour())
            self.settle()

    async def _an_hour(self) -> None:
        # a workflow's timers are its own; one waiting on a running child is skipped through
        # the child (a fast-forward of a parent of a running child does not finish here)
        for handle, desc in await self._tree():
            if desc.status is OPEN and not desc.raw_description.pending_children:
                await self._fast_forward(handle, timedelta(hours=1, minutes=1))

    async def _fast_forward(self, handle: WorkflowHandle[Any, Any], by: timedelta) -> None:
        """Skip a workflow's clock ahead; one that ends or closes meanwhile is fine."""
        try:
            await asyncio.wait_for(self.world.env.fast_forward(handle, by), FAST_FORWARD_WITHIN)
        except TimeoutError:
            desc = await handle.describe()
            if desc.status is OPEN:
                raise AssertionError(
                    f"fast-forward of {handle.id} by {by} did not finish: steps {self.steps}"
                ) from None

    # --- invariants ---

    def status(self, state: OrderState) -> OrderStatus:
        """The order's status: the database's after a return, else the workflow's."""
        recorded = self.world.recorded_status(self.order_id)
        if recorded in (OrderStatus.RETURNED, OrderStatus.REFUND_FAILED):
            return recorded
        return state.status

    def _retrying(self) -> bool:
        """The order's capture retries are still running."""
        return any(
            h.id.startswith("payment-capture-") and d.status is OPEN
            for h, d in self.run(self._tree())
        )

    def operators(self) -> set[str]:
        """Payments the order refused by its answer: the webhook leaves them to an operator."""
        return {r.payment_id for r in self.reported if r.accepted is False}

    @invariant()
    def money_is_where_the_status_says(self) -> None:
        """captured − refunded at the gateway is the total if kept, 0 if not, owed if REFUND_FAILED."""
        if not self.started:
            return
        state = self.settle()
        status = self.status(state)
        ledger = self.world.ledger
        mine = [m for m in ledger.of_kind("capture") if m.payment_id not in self.operators()]
        net = sum(m.amount for m in mine) - sum(
            m.amount for m in ledger.of_kind("refund") if m.of not in self.operators()
        )
        where = (
            f"order {self.order_id} {status}: gateway net {net}, total {self.total}; "
            f"ledger {ledger.movements}; history {[h.note for h in state.history]}; "
            f"steps {self.steps}"
        )
        if status in (OrderStatus.CONFIRMED, OrderStatus.SHIPPED):
            assert net == self.total, where
        elif status == OrderStatus.REFUND_FAILED:
            assert net > 0, f"REFUND_FAILED, but nothing is owed: {where}"
            assert any("REFUND FAILED" in h.note or "declined" in h.note for h in state.history), (
                where
            )
        elif status in (OrderStatus.IN_REVIEW, OrderStatus.PAID):
            held = bool(state.payment_id) and ledger.hold(state.payment_id) is not None
            assert net == (0 if held else self.total), where
        elif status == OrderStatus.PAYMENT_RETRYING and self._retrying():
            # an attempt whose answer never came may have taken the total: the next one finds it
            assert net in (0, self.total), where
        else:
            assert net == 0, where
        for m in ledger.of_kind("capture"):
            assert ledger.refunded(m.payment_id) <= ledger.captured(m.payment_id), where
        if state.status in (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.REFUND_FAILED):
            for r in self.reported:
                if r.held and r.payment_id not in self.operators():
                    held = ledger.hold_state(r.payment_id)
                    lapses = any(
                        f"RELEASE FAILED for {r.payment_id}" in h.note for h in state.history
                    )
                    assert held != "held" or lapses, f"hold {r.payment_id} kept: {where}"

    @invariant()
    def no_payment_is_charged_twice(self) -> None:
        """One capture per payment id; the order keeps one payment."""
        if not self.started:
            return
        ids = [m.payment_id for m in self.world.ledger.of_kind("capture")]
        assert len(ids) == len(set(ids)), f"charged twice: {ids}; steps {self.steps}"

    @invariant()
    def every_capture_has_its_row(self) -> None:
        """Every payment taken for the order (not left to an operator) is recorded on our side."""
        if not self.started:
            return
        state = self.settle()
        rows = self.world.rows(self.order_id)
        for m in self.world.ledger.of_kind("capture"):
            if m.payment_id in self.operators():
                continue
            if state.status in (OrderStatus.PENDING_PAYMENT, OrderStatus.PAYMENT_RETRYING):
                continue  # not yet the order's: it is accepted or refused first
            assert m.payment_id in rows, (
                f"{m.payment_id} captured ({m.amount}) with no row; rows {rows}; "
                f"{state.status}; steps {self.steps}"
            )

    @invariant()
    def stock_is_conserved(self) -> None:
        """Reserved stock is released exactly once unless shipped."""
        if not self.started:
            return
        state = self.settle()
        stock = self.world.stock(self.order_id)
        status = self.status(state)
        expected = {
            OrderStatus.SHIPPED: {"shipped"},
            OrderStatus.RETURNED: {"shipped"},
            OrderStatus.CANCELLED: {"released"},
            OrderStatus.REJECTED: {"none", "released"},
            OrderStatus.REFUND_FAILED: {"released", "shipped"},
        }.get(status, {"reserved"})
        assert stock in expected, f"stock {stock} for a {status} order; steps {self.steps}"

    @invariant()
    def a_flagged_payment_is_reviewed(self) -> None:
        """A payment flagged before its order confirmed is never confirmed without a review."""
        if not self.started or not self.flagged_before_decision:
            return
        state = self.settle()
        if state.status in (OrderStatus.CONFIRMED, OrderStatus.SHIPPED):
            assert any("SUSPICIOUS_PAYMENT" in h.note for h in state.history), (
                f"flagged, confirmed unreviewed: {[h.note for h in state.history]}; {self.steps}"
            )

    @invariant()
    def a_settled_order_can_move(self) -> None:
        """An open order waits for something a rule can still do (never for nothing)."""
        if not self.started:
            return
        state = self.settle()
        desc = self.run(self.handle().describe())
        if desc.status is not OPEN:
            return
        movable = {
            OrderStatus.NEW: False,  # the stock check has answered by now
            OrderStatus.PENDING_PAYMENT: True,
            OrderStatus.PAYMENT_RETRYING: True,
            OrderStatus.IN_REVIEW: bool(state.review_id),
            OrderStatus.CONFIRMED: True,
            OrderStatus.PAID: False,  # passes on to capture or confirm by itself
        }.get(state.status, False)
        assert movable, f"order {self.order_id} stuck in {state.status}; steps {self.steps}"

    def teardown(self) -> None:
        """Drive the order to its end (cancel, let the retries run out) and check it ends."""
        try:
            if self.started:
                self._finish()
        finally:
            if self.started:
                self.run(self.world.stop())

    def _finish(self) -> None:
        self.world.ledger.lose.clear()
        self.world.ledger.outage.clear()
        self.world.ledger.declines.clear()
        for _ in range(4):
            state = self.settle()
            desc = self.run(self.handle().describe())
            if desc.status is not OPEN:
                break
            self.note("teardown: cancel (or ship), an hour passes")
            if state.status == OrderStatus.CONFIRMED:
                self.run(self._signal(self.orders.shipped(self.order_id, Shipment("DTDC", "X2"))))
            else:
                self.run(self._signal(self.orders.cancel(self.order_id, "teardown")))
            self.settle()
            self.run(self._an_hour())
        else:
            state = self.settle()
            raise AssertionError(
                f"order {self.order_id} never ended: {state.status} "
                f"{[h.note for h in state.history][-4:]}; steps {self.steps}"
            )
        self.money_is_where_the_status_says()
        self.no_payment_is_charged_twice()
        self.every_capture_has_its_row()
        self.stock_is_conserved()
