"""OrderWorkflow: reserve, wait for payment under the auto-cancel timer, review, confirm, ship.

The run and the status guard live here; the rest by concern, one mixin each, all on the state
and primitives of `workflows/order_core.py`: taking the payment (`order_payments.py`), giving
money back (`order_refunds.py`), the review and the cancellation (`order_steps.py`), the
signals, update and query (`order_handlers.py`), the ERP sync and the mails
(`order_effects.py`). The patch ids are in `order_patches.py` (docs/VERSIONING.md).
Those modules are imported into the sandbox, never passed through: their imports of the
contracts must reach it, or the type hints of a child's result do not resolve there.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.order_core import DB_TIMEOUT
from workflows.order_handlers import OrderHandlers
from workflows.order_patches import (
    EARLY_PAYMENT_AMOUNT_CHECK,
    MANUAL_CAPTURE,
    PATCHES_AT_START,
)
from workflows.order_payments import OrderPayments
from workflows.order_steps import OrderSteps

with workflow.unsafe.imports_passed_through():
    from activities.inventory import InventoryActivities
    from activities.order import OrderActivities
    from orderflow.contracts.inventory import INVENTORY_TASK_QUEUE, ShipInput
    from orderflow.contracts.order import (
        ORDER_STATUS,
        ORDER_TOTAL,
        TRANSITIONS,
        CancelRequest,
        ConfirmInput,
        NotificationKind,
        OrderInput,
        OrderResult,
        OrderStatus,
        StatusChange,
        StatusInput,
    )
    from orderflow.money import format_money


class IllegalTransition(RuntimeError):
    """A status change TRANSITIONS does not allow: a defect in the workflow, never the input."""


@workflow.defn
class OrderWorkflow(OrderHandlers, OrderPayments, OrderSteps):
    """One order, from reservation to shipment or cancellation."""

    @workflow.init
    def __init__(self, order: OrderInput) -> None:
        self._order = order
        self._status = OrderStatus.NEW
        self._history = []
        self._total = 0  # minor units of self._currency
        self._currency = ""
        self._payment = None
        self._failures = []
        self._retry_wanted = False
        self._cancel = None
        self._shipment = None
        self._review_id = ""
        self._refund_failed = False
        # before any handler or command of the first workflow task (FOLDED_PATCHES)
        self._patches_at_start = workflow.patched(PATCHES_AT_START)

    @workflow.run
    async def run(self, order: OrderInput) -> OrderResult:
        """Drive the order to SHIPPED, CANCELLED or REJECTED."""
        try:
            placed = await self._act(OrderActivities.place_order, order)
        except (ActivityError, ApplicationError) as err:  # only non-retryable errors get here
            cause = err.cause if isinstance(err, ActivityError) and err.cause else err
            self._set(OrderStatus.REJECTED, f"order could not be placed: {cause}")
            if self._payment is not None:
                self._note(await self._give_back(str(cause), self._payment))
            return await self._end()
        self._total, self._currency = placed.total, placed.currency
        workflow.upsert_search_attributes([ORDER_TOTAL.value_set(placed.total)])
        if not placed.reserved:
            self._set(OrderStatus.REJECTED, placed.reason)
            if self._payment is not None:  # paid before the stock check answered
                self._note(await self._give_back(placed.reason, self._payment))
            return await self._end()
        self._set(
            OrderStatus.PENDING_PAYMENT, f"{format_money(placed.total, placed.currency)} reserved"
        )
        # orders started before this check have no marker and replay without it
        if self._payment is not None and self._patched(EARLY_PAYMENT_AMOUNT_CHECK):
            await self._check_early_payment()

        if not await self._await_payment():
            return await self._cancel_order(refund=True)  # refunds only what was captured
        assert self._payment is not None

        review = self._review_kind()
        if review is not None:
            if not self._payment.authorised_only:  # a hold is recorded once it is captured
                await self._act(
                    OrderActivities.record_payment, ConfirmInput(order.order_id, self._payment)
                )
            approved, note = await self._review(review)
            if not approved:
                self._cancel = self._cancel or CancelRequest(reason=note)
                return await self._cancel_order(refund=True)
            if self._cancel is not None:  # cancelled while under review
                return await self._cancel_order(refund=True)
        # only an authorisation takes this branch, and no order before it had one
        if self._payment.authorised_only and self._patched(MANUAL_CAPTURE):
            if self._cancel is not None or not await self._capture_authorisation():
                return await self._cancel_order(refund=True)  # a hold is released, not refunded

        confirmed = await self._act(
            OrderActivities.confirm_order, ConfirmInput(order.order_id, self._payment)
        )
        self._set(OrderStatus.CONFIRMED, f"invoice {confirmed.invoice_number}")
        # independent of each other: one workflow task schedules both
        await asyncio.gather(self._sync_erp(), self._notify(NotificationKind.CONFIRMATION))

        await workflow.wait_condition(
            lambda: self._shipment is not None or self._cancel is not None
        )
        if self._shipment is None:
            return await self._cancel_order(refund=True)
        await self._act(
            OrderActivities.set_status, StatusInput(order.order_id, OrderStatus.SHIPPED)
        )
        await workflow.execute_activity_method(
            InventoryActivities.ship_reservation,
            ShipInput(order.order_id),
            start_to_close_timeout=DB_TIMEOUT,
            task_queue=INVENTORY_TASK_QUEUE,
        )
        self._set(
            OrderStatus.SHIPPED,
            f"{self._shipment.carrier} {self._shipment.tracking_number}".strip(),
        )
        await self._notify(NotificationKind.SHIPPING, shipment=self._shipment)
        return await self._end()

    def _set(self, status: OrderStatus, note: str = "") -> None:
        """Move to `status` if TRANSITIONS allows it (this module's name: a test replaces it)."""
        if status not in TRANSITIONS[self._status]:
            # not an ApplicationError: the workflow task fails and retries, the order waits
            raise IllegalTransition(
                f"order {self._order.order_id}: {self._status} → {status} is not in TRANSITIONS"
            )
        self._status = status
        self._history.append(StatusChange(status=status, at=workflow.now(), note=note))
        workflow.upsert_search_attributes([ORDER_STATUS.value_set(status.value)])
