"""Orders paid before their stock check answers replay on a new worker (issue 18, found by the
stateful money test): the first workflow task's local activity and the next task's patch marker.

On the time-skipping server the first task ends with place_order's local-activity marker and the
order's next commands (the early payment's patch marker among them) go in a new task; on replay
the local activity resolves inside the first task, before the SDK has seen the next task's
markers, so a `workflow.patched` call right after it answered False and the replay failed.
"""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from orderflow.contracts.order import OrderState, OrderStatus, PaymentReceived, order_workflow_id
from tests.helpers import eventually, new_order_id, start_with_payment
from tests.unit.conftest import UNIT_WORKFLOWS, OwnTaskQueue, Stubs, stub_worker, unit_client


@pytest.mark.parametrize(
    ("amount", "status", "last"),
    [(10_000, OrderStatus.CONFIRMED, "invoice"), (9_999, OrderStatus.PENDING_PAYMENT, "refunded")],
    ids=["right", "short"],
)
async def test_an_order_paid_before_its_stock_check_replays_on_a_new_worker(
    env: WorkflowEnvironment, amount: int, status: OrderStatus, last: str
) -> None:
    stubs = Stubs(prices={"bag": 10_000})
    orders = unit_client(env)
    order_id = new_order_id()
    async with stub_worker(env, stubs, orders.task_queue):
        payment = PaymentReceived("pay_early", amount, "stub", currency="INR")
        await start_with_payment(orders, order_id, [("bag", 1)], payment)

        async def settled() -> OrderState | None:
            state = await orders.status(order_id)
            done = state.status == status and state.history[-1].note.startswith(last)
            return state if done else None

        before = await eventually(settled, 20, f"order {order_id} {status}, then {last}")
    history = await env.client.get_workflow_handle(order_workflow_id(order_id)).fetch_history()
    replayed = await Replayer(
        workflows=UNIT_WORKFLOWS,
        interceptors=[OwnTaskQueue()],
        data_converter=env.client.data_converter,
    ).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, f"order {order_id}: {replayed.replay_failure}"
    async with stub_worker(env, stubs, orders.task_queue, cache=False):  # a restart: no cache
        after = await orders.status(order_id)

    def notes(state: OrderState) -> list[tuple[OrderStatus, str]]:
        return [(h.status, h.note) for h in state.history]

    assert (after.status, notes(after)) == (before.status, notes(before))
