"""The order service's one entry point into the workflows: start, signal, query, decide."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from sqlalchemy.engine import Engine
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from app.client_reviews import OrderReviews
from orderflow.codec import customer_hash
from orderflow.contracts.order import (
    CUSTOMER_ID,
    ORDERS_TASK_QUEUE,
    PAYABLE_STATUSES,
    CancelRequest,
    OrderInput,
    OrderLine,
    OrderPolicy,
    OrderResult,
    OrderState,
    PaymentAck,
    PaymentFailed,
    PaymentReceived,
    Shipment,
    order_workflow_id,
)
from orderflow.contracts.payment import Checkout, CheckoutRequest
from orderflow.db import make_engine
from orderflow.errors import (
    InvalidOrderError,
    OrderClosedError,
    UnknownOrderError,
)
from orderflow.money import to_minor
from orderflow.settings import Settings
from payments.gateway import PaymentGateway, make_gateway
from workflows.order import OrderWorkflow


def policy_from_settings(settings: Settings) -> OrderPolicy:
    """The order rules as configured."""
    return OrderPolicy(
        payment_timeout_seconds=settings.payment_timeout_seconds,
        high_value_threshold=to_minor(settings.high_value_threshold, settings.currency),
        suspicious_failed_attempts=settings.suspicious_failed_attempts,
        payment_retry_attempts=settings.payment_retry_attempts,
        payment_retry_interval_seconds=settings.payment_retry_interval_seconds,
        erp_attempts=settings.erp_attempts,
    )


class OrderClient(OrderReviews):
    """Start orders, tell them about payments, cancellations and shipments, and read their state.

    Args:
        client: a connected Temporal client (`app.temporal.connect`).
        settings: the order rules and the gateway come from here.
        engine: the orders database; without it the gateway opens its own and pending reviews
            are listed from Temporal's visibility instead.
        task_queue: where order workflows run (`orders`).
        gateway: the gateway checkouts are opened at; default the configured one.
    """

    def __init__(
        self,
        client: Client,
        settings: Settings,
        engine: Engine | None = None,
        *,
        task_queue: str = ORDERS_TASK_QUEUE,
        gateway: PaymentGateway | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.engine = engine
        self.task_queue = task_queue
        self._gateway = gateway  # for checkouts; default: the configured one (ORDERFLOW_GATEWAY)

    @property
    def gateway(self) -> PaymentGateway:
        """The payment gateway checkouts are opened at."""
        if self._gateway is None:
            engine = self.engine if self.engine is not None else make_engine(self.settings.db_url)
            self._gateway = make_gateway(self.settings, engine)
        return self._gateway

    async def create_checkout(
        self,
        order_id: str,
        *,
        customer: str = "",
        payment_method: str = "",
        capture_manually: bool = False,
    ) -> Checkout:
        """Open the gateway's checkout for an order waiting for payment, for its exact total.

        The PaymentIntent (Razorpay: order) carries `metadata.order_id`, so the gateway's
        webhook finds the order. With `payment_method` (a saved card) it is confirmed at once.

        Args:
            order_id: the order to pay.
            customer: the gateway's customer id, if the shop keeps one.
            payment_method: a saved payment method: the checkout is confirmed at once.
            capture_manually: authorise only (a hold); the order captures its total later.

        Returns:
            The gateway's checkout (its id and the client secret or key the page needs).

        Raises:
            OrderClosedError: the order is not waiting for payment.
            UnknownOrderError: no such order.
            GatewayUnavailableError: the gateway did not answer; retrying is safe.
        """
        state = await self.status(order_id)
        if state.status not in PAYABLE_STATUSES:
            raise OrderClosedError(order_id, f"it is {state.status}, no checkout to open")
        request = CheckoutRequest(
            order_id=order_id,
            amount=state.total,
            currency=state.currency,
            customer=customer,
            payment_method=payment_method,
            capture_manually=capture_manually,
        )
        return await asyncio.to_thread(self.gateway.create_checkout, request)

    def _handle(self, order_id: str) -> WorkflowHandle[OrderWorkflow, OrderResult]:
        return self.client.get_workflow_handle_for(OrderWorkflow.run, order_workflow_id(order_id))

    async def start_order(
        self,
        order_id: str,
        customer_id: str,
        email: str,
        items: list[OrderLine] | list[tuple[str, int]],
        *,
        payment_timeout_seconds: float | None = None,
        policy: OrderPolicy | None = None,
    ) -> WorkflowHandle[OrderWorkflow, OrderResult]:
        """Start the order's workflow; starting the same order again returns the same run.

        Args:
            order_id: the order service's id; the workflow id is derived from it.
            customer_id: kept as the `CustomerId` search attribute, as its keyed hash.
            email: where the order's mails go.
            items: (sku, quantity) pairs or `OrderLine`s; prices come from the catalogue.
            payment_timeout_seconds: this order's auto-cancel timer instead of the setting's.
            policy: the whole rule set for this order instead of the settings'.

        Returns:
            The workflow's handle (the existing run's for an order started before).

        Raises:
            InvalidOrderError: no id, no lines, or a line without SKU or quantity.
        """
        order = self._order_input(
            order_id, customer_id, email, items, payment_timeout_seconds, policy
        )
        try:
            return await self.client.start_workflow(
                OrderWorkflow.run, order, **self._start_options(order)
            )
        except WorkflowAlreadyStartedError:
            return self._handle(order_id)

    async def place(
        self,
        order_id: str,
        customer_id: str,
        email: str,
        items: list[OrderLine] | list[tuple[str, int]],
        *,
        policy: OrderPolicy | None = None,
    ) -> OrderState:
        """Start a new order and answer its state once the stock check has answered, in one call.

        The start and the `placed` update go to Temporal together (update-with-start): the
        update is handled in the order's first workflow task, so the state costs no extra task.
        Unlike `start_order`, an id started before is not used: it raises.

        Args:
            order_id: the order service's id.
            customer_id: kept as the `CustomerId` search attribute, as its keyed hash.
            email: where the order's mails go.
            items: (sku, quantity) pairs or `OrderLine`s; prices come from the catalogue.
            policy: the whole rule set for this order instead of the settings'.

        Returns:
            The new order's state: PENDING_PAYMENT with its total, or REJECTED.

        Raises:
            InvalidOrderError: no id, no lines, or a line without SKU or quantity.
            WorkflowAlreadyStartedError: the id was started before (running or closed).
        """
        order = self._order_input(order_id, customer_id, email, items, policy=policy)
        try:
            state = await self._placed_with_start(order, WorkflowIDConflictPolicy.FAIL)
        except WorkflowUpdateFailedError:
            state = await self.status(order_id)  # it ended in its first task (REJECTED)
        return state

    async def start_new(
        self,
        order_id: str,
        customer_id: str,
        email: str,
        items: list[OrderLine] | list[tuple[str, int]],
        *,
        policy: OrderPolicy | None = None,
    ) -> None:
        """Start a new order without waiting for anything (its stock check answers later).

        Like `place`, an id started before is not used: it raises; unlike it, nothing is
        answered but that Temporal has the start (the HTTP API's `Prefer: return=minimal`).

        Raises:
            InvalidOrderError: no id, no lines, or a line without SKU or quantity.
            WorkflowAlreadyStartedError: the id was started before (running or closed).
        """
        order = self._order_input(order_id, customer_id, email, items, policy=policy)
        options = self._start_options(order) | {"id_conflict_policy": WorkflowIDConflictPolicy.FAIL}
        await self.client.start_workflow(OrderWorkflow.run, order, **options)

    async def _placed_with_start(
        self, order: OrderInput, conflict: WorkflowIDConflictPolicy
    ) -> OrderState:
        """Start `order` and send its `placed` update together (update-with-start)."""
        options = self._start_options(order) | {"id_conflict_policy": conflict}
        start = WithStartWorkflowOperation(OrderWorkflow.run, order, **options)
        state: OrderState = await self.client.execute_update_with_start_workflow(
            OrderWorkflow.placed, start_workflow_operation=start
        )
        return state

    def _order_input(
        self,
        order_id: str,
        customer_id: str,
        email: str,
        items: list[OrderLine] | list[tuple[str, int]],
        payment_timeout_seconds: float | None = None,
        policy: OrderPolicy | None = None,
    ) -> OrderInput:
        lines = [
            i if isinstance(i, OrderLine) else OrderLine(sku=i[0], quantity=i[1]) for i in items
        ]
        if not order_id or not lines or any(line.quantity <= 0 or not line.sku for line in lines):
            raise InvalidOrderError(
                f"order {order_id!r}: needs an id and at least one line with a SKU and quantity > 0"
            )
        policy = policy or policy_from_settings(self.settings)
        if payment_timeout_seconds is not None:
            policy.payment_timeout_seconds = payment_timeout_seconds
        return OrderInput(
            order_id=order_id, customer_id=customer_id, email=email, items=lines, policy=policy
        )

    def _start_options(self, order: OrderInput) -> dict[str, Any]:
        """How an order's workflow is started: one run per order id, ever."""
        return {
            "id": order_workflow_id(order.order_id),
            "task_queue": self.task_queue,
            "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "search_attributes": TypedSearchAttributes(
                [
                    SearchAttributePair(
                        CUSTOMER_ID,
                        customer_hash(order.customer_id, self.settings.customer_hash_secret),
                    )
                ]
            ),
        }

    async def checkout(
        self,
        order_id: str,
        customer_id: str,
        email: str,
        items: list[OrderLine] | list[tuple[str, int]],
        *,
        customer: str = "",
        payment_method: str = "",
        capture_manually: bool = False,
    ) -> tuple[OrderState, Checkout]:
        """Start the order if it is not running and open its checkout, in one round trip.

        The start and the `placed` update go to Temporal together (update-with-start): the
        answer is the order's state once its stock is reserved, and the gateway's checkout is
        opened for exactly its total. An order started before is used as it is.

        Args:
            order_id: the order service's id.
            customer_id: kept as the `CustomerId` search attribute, as its keyed hash.
            email: where the order's mails go.
            items: (sku, quantity) pairs or `OrderLine`s.
            customer: the gateway's customer id, if the shop keeps one.
            payment_method: a saved payment method: the checkout is confirmed at once.
            capture_manually: authorise only; the order captures its total later.

        Returns:
            The order's state (PENDING_PAYMENT) and the gateway's checkout.

        Raises:
            InvalidOrderError: no id, no lines, or a line without SKU or quantity.
            OrderClosedError: the order was rejected (no stock) or is past payment.
            GatewayUnavailableError: the gateway did not answer; calling again is safe.
        """
        order = self._order_input(order_id, customer_id, email, items)
        try:
            state = await self._placed_with_start(order, WorkflowIDConflictPolicy.USE_EXISTING)
        except (WorkflowAlreadyStartedError, RPCError, WorkflowUpdateFailedError):
            state = await self.status(order_id)  # a closed order: say what it is
        if state.status not in PAYABLE_STATUSES:
            detail = (state.history[-1].note if state.history else "") or state.status
            raise OrderClosedError(
                order_id, f"it is {state.status} ({detail}), no checkout to open"
            )
        request = CheckoutRequest(
            order_id=order_id,
            amount=state.total,
            currency=state.currency,
            customer=customer,
            payment_method=payment_method,
            capture_manually=capture_manually,
        )
        return state, await asyncio.to_thread(self.gateway.create_checkout, request)

    async def payment_received(
        self,
        order_id: str,
        payment: PaymentReceived,
        *,
        update_id: str = "",
        wait_seconds: float | None = None,
    ) -> PaymentAck:
        """Report a payment and learn at once whether the order accepted it.

        Args:
            order_id: the order paid for.
            payment: what the gateway captured (payment id, amount, currency).
            update_id: the `pay` update's id: a second call with it (a retried webhook job)
                waits for the first one's update instead of sending another.
            wait_seconds: wait this long for the answer at most (the update goes on).

        Returns:
            Whether the order accepted the payment, its status, and why not if it refused.
            A closed order refuses (accepted False) rather than raising.

        Raises:
            WorkflowUpdateRPCTimeoutOrCancelledError: no answer within `wait_seconds`.
            UnknownOrderError: no such order.
        """
        handle = self._handle(order_id)
        try:
            if not update_id and wait_seconds is None:
                return await handle.execute_update(OrderWorkflow.pay, payment)
            update = await handle.start_update(
                OrderWorkflow.pay,
                payment,
                id=update_id or None,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
            # the poll runs in a task of its own: cancelling it must not touch this task's
            # cancellation state (the SDK turns a cancelled poll into another error)
            poll = asyncio.ensure_future(update.result())
            try:
                done, _ = await asyncio.wait({poll}, timeout=wait_seconds)
            finally:
                if not poll.done():
                    poll.cancel()
                    poll.add_done_callback(_consumed)
            if not done:
                raise WorkflowUpdateRPCTimeoutOrCancelledError()
            return poll.result()
        except WorkflowUpdateFailedError as err:
            return PaymentAck(accepted=False, status=None, reason=str(err.cause or err))
        except RPCError as err:
            try:
                await self._raise_for(order_id, err)
            except OrderClosedError:
                final = (await self.status(order_id)).status
                return PaymentAck(
                    accepted=False,
                    status=final,
                    reason=f"order {order_id} is {final} and closed: payment {payment.payment_id} refused",
                )
            raise

    async def signal_payment_received(self, order_id: str, payment: PaymentReceived) -> None:
        """Report a payment without waiting for the workflow (fire-and-forget signal).

        Raises:
            UnknownOrderError: no such order.
            OrderClosedError: its workflow has ended.
        """
        await self._signal(order_id, OrderWorkflow.payment_received, payment)

    async def payment_failed(self, order_id: str, failure: PaymentFailed) -> None:
        """Report a failed capture: the order starts its payment retries.

        Raises:
            UnknownOrderError: no such order.
            OrderClosedError: its workflow has ended.
        """
        await self._signal(order_id, OrderWorkflow.payment_failed, failure)

    async def cancel(self, order_id: str, reason: str = "cancelled by customer") -> None:
        """Cancel the order (a paid one is refunded, a hold released).

        Args:
            order_id: the order to cancel.
            reason: kept in its history and put in the cancellation mail.

        Raises:
            UnknownOrderError: no such order.
            OrderClosedError: its workflow has ended.
        """
        await self._signal(order_id, OrderWorkflow.cancel, CancelRequest(reason=reason))

    async def shipped(self, order_id: str, shipment: Shipment | None = None) -> None:
        """The warehouse shipped a confirmed order.

        Args:
            order_id: the shipped order.
            shipment: carrier and tracking number, for the shipping mail.

        Raises:
            UnknownOrderError: no such order.
            OrderClosedError: its workflow has ended.
        """
        await self._signal(order_id, OrderWorkflow.shipped, shipment or Shipment())

    async def status(self, order_id: str) -> OrderState:
        """The order's status and its history (works after the workflow ended too).

        Raises:
            UnknownOrderError: no such order.
        """
        try:
            return await self._handle(order_id).query(OrderWorkflow.status)
        except RPCError as err:
            await self._raise_for(order_id, err)
            raise

    async def result(self, order_id: str) -> OrderResult:
        """Wait for the order's workflow to end and return how it ended."""
        return await self._handle(order_id).result()

    async def _signal(self, order_id: str, signal: Any, arg: Any) -> None:
        try:
            await self._handle(order_id).signal(signal, arg)
        except RPCError as err:
            await self._raise_for(order_id, err)
            raise

    async def _raise_for(self, order_id: str, err: RPCError) -> None:
        if err.status != RPCStatusCode.NOT_FOUND:
            return
        try:
            desc = await self._handle(order_id).describe()
        except RPCError:
            raise UnknownOrderError(order_id) from err
        if desc.status != WorkflowExecutionStatus.RUNNING:
            raise OrderClosedError(
                order_id, f"its workflow is {desc.status.name if desc.status else '?'}"
            ) from err


def to_dict(obj: Any) -> dict[str, Any]:
    """A contract dataclass as plain JSON-able data (for the CLI's --json)."""
    return asdict(obj)


def _consumed(task: asyncio.Future[Any]) -> None:
    """Read a given-up task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
