"""ManualReviewWorkflow with its activities stubbed: decisions, validation, an approved return."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowUpdateFailedError

from app.client import OrderClient
from orderflow.contracts.order import OrderStatus
from orderflow.contracts.payment import PaymentKind
from orderflow.contracts.review import ReviewDecision, ReviewInput, ReviewKind
from tests.helpers import new_order_id
from tests.unit.conftest import Stubs
from workflows.review import ManualReviewWorkflow


async def test_approved_return_is_refunded_and_marked_returned(
    unit_orders: OrderClient, stubs: Stubs
) -> None:
    order_id = new_order_id()
    review_id = f"review-return-{order_id}"
    handle = await unit_orders.client.start_workflow(
        ManualReviewWorkflow.run,
        ReviewInput(review_id, order_id, ReviewKind.RETURN, reason="wrong size", amount=250_000),
        id=review_id,
        task_queue=unit_orders.task_queue,
    )
    with pytest.raises(WorkflowUpdateFailedError):  # the validator refuses a nameless decision
        await handle.execute_update(ManualReviewWorkflow.decide, ReviewDecision(True, " "))
    outcome = await handle.execute_update(
        ManualReviewWorkflow.decide, ReviewDecision(approve=True, reviewer="meena")
    )
    assert outcome.approved and (await handle.result()).reviewer == "meena"
    assert [(r.kind, r.amount) for r in stubs.called("call_gateway")] == [
        (PaymentKind.REFUND, 250_000)
    ]
    [status] = stubs.called("set_status")
    assert (status.order_id, status.status) == (order_id, OrderStatus.RETURNED)
    assert [o.approved for o in stubs.called("close_review")] == [True]


async def test_rejected_return_refunds_nothing(unit_orders: OrderClient, stubs: Stubs) -> None:
    order_id = new_order_id()
    review_id = f"review-return-{order_id}"
    handle = await unit_orders.client.start_workflow(
        ManualReviewWorkflow.run,
        ReviewInput(review_id, order_id, ReviewKind.RETURN, reason="worn", amount=90_000),
        id=review_id,
        task_queue=unit_orders.task_queue,
    )
    await handle.execute_update(
        ManualReviewWorkflow.decide, ReviewDecision(approve=False, reviewer="ravi", note="worn")
    )
    assert not (await handle.result()).approved
    assert not stubs.called("call_gateway") and not stubs.called("set_status")
