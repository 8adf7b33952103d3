"""The state of an order and the primitives every step of OrderWorkflow uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.order_patches import (
    EMPTY_CURRENCY_REFUSED,
    FOLDED_PATCHES,
    WHOLE_HOLD_ONLY,
)

with workflow.unsafe.imports_passed_through():
    from orderflow.contracts.order import (
        CancelRequest,
        OrderInput,
        OrderResult,
        OrderStatus,
        PaymentFailed,
        PaymentReceived,
        Shipment,
        StatusChange,
    )
    from workflows import acceptance

_Arg = TypeVar("_Arg")
_Ret = TypeVar("_Ret")

DB_TIMEOUT = timedelta(seconds=30)


class OrderCore:
    """What every part of OrderWorkflow reads and writes; OrderWorkflow.__init__ sets it."""

    _order: OrderInput
    _status: OrderStatus
    _history: list[StatusChange]
    _total: int  # minor units of self._currency
    _currency: str
    _payment: PaymentReceived | None
    _failures: list[PaymentFailed]
    _retry_wanted: bool
    _cancel: CancelRequest | None
    _shipment: Shipment | None
    _review_id: str
    _refund_failed: bool
    _patches_at_start: bool

    def _patched(self, change: str) -> bool:
        """Whether this order has `change` (one of FOLDED_PATCHES; docs/VERSIONING.md)."""
        assert change in FOLDED_PATCHES, f"{change} is not decided at start"
        return self._patches_at_start or workflow.patched(change)

    def _set(self, status: OrderStatus, note: str = "") -> None:
        """Move to `status`: OrderWorkflow._set, which checks it against TRANSITIONS."""
        raise NotImplementedError

    def _note(self, note: str) -> None:
        self._history.append(StatusChange(status=self._status, at=workflow.now(), note=note))

    async def _act(self, method: Callable[[Any, _Arg], _Ret], arg: _Arg) -> _Ret:
        """One database step of the order, as a local activity."""
        return await workflow.execute_local_activity_method(
            method, arg, start_to_close_timeout=DB_TIMEOUT
        )

    @staticmethod
    async def _tell(signal: Awaitable[None]) -> None:
        """Signal a child that may have just finished on its own (then there is nothing to say)."""
        try:
            await signal
        except ApplicationError as err:
            workflow.logger.info("child already finished: %s", err)

    async def _end(self) -> OrderResult:
        await workflow.wait_condition(workflow.all_handlers_finished)
        return OrderResult(
            order_id=self._order.order_id,
            status=self._status,
            total=self._total,
            currency=self._currency,
        )

    def _due(self) -> acceptance.Due:
        """What this order is owed, for the acceptance rules (workflows/acceptance.py)."""
        return acceptance.Due(
            order_id=self._order.order_id,
            total=self._total,
            currency=self._currency,
            refuses_empty_currency=lambda: self._patched(EMPTY_CURRENCY_REFUSED),
            whole_hold_only=lambda: self._patched(WHOLE_HOLD_ONLY),
        )

    def _in_currency(self, payment: PaymentReceived) -> bool:
        return acceptance.in_currency(payment, self._due())

    def _currency_refusal(self, payment: PaymentReceived) -> str:
        return acceptance.currency_refusal(payment, self._due())

    def _acceptable(self, payment: PaymentReceived) -> bool:
        return acceptance.acceptable(payment, self._due())
