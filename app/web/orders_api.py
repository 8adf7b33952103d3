"""The HTTP order API (`/api/v1`): what an order service in any language calls.

The same operations as `OrderClient`, on the same contracts (orderflow/contracts/), behind
bearer API keys (settings.api_key_hashes, SHA-256 digests compared in constant time). Every
error is `application/problem+json` (RFC 9457) naming the field and the order.
"""

# no `from __future__ import annotations`: FastAPI must see the local dependency types
import asyncio
import logging
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response
from sqlalchemy import select
from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from app.client import OrderClient, policy_from_settings
from app.web.api_auth import api_key_guard
from app.web.api_models import (
    ORDER_ID,
    Accepted,
    CancelIn,
    CheckoutAnswer,
    CheckoutIn,
    DecisionIn,
    OrderCreate,
    PaymentFailureIn,
    PaymentIn,
    ReturnIn,
    ReturnOpened,
    ShipmentIn,
    order_id_of,
)
from app.web.api_problems import (
    PREFIX,
    RETRY_AFTER_SECONDS,
    ApiProblem,
    known_problem,
    problem_responses,
    unavailable,
)
from orderflow.contracts.order import (
    OrderInput,
    OrderLine,
    OrderState,
    PaymentAck,
    PaymentFailed,
    PaymentReceived,
    Shipment,
    order_workflow_id,
)
from orderflow.contracts.review import PendingReview, ReviewDecision, ReviewOutcome
from orderflow.db import Product, reader, table
from orderflow.errors import (
    OrderflowError,
)
from orderflow.settings import Settings

log = logging.getLogger(__name__)

STATE_WAIT_SECONDS = 5.0  # a new order's state is read this long at most, else 202
PAYMENT_WAIT_SECONDS = 10.0  # the payment update's answer is awaited this long at most
KNOWN_SKU_SECONDS = 5.0  # a SKU the catalogue had is not asked for again this long
KNOWN_SKUS_KEPT = 10_000  # past this many, expired entries are dropped
BACKEND_WAIT_SECONDS = 15.0  # any one call to Temporal or the database, then a 503
PRODUCTS = table(Product)


class OrdersApi:
    """The API's operations over one `OrderClient`."""

    def __init__(self, settings: Settings, orders: OrderClient, engine: Engine | None) -> None:
        self.settings, self.orders, self.engine = settings, orders, engine
        # the API only reads the database: on SQLite its transactions take no write lock, so a
        # catalogue check never waits for a worker's write
        self.reads = reader(engine) if engine is not None else None
        self._known_skus: dict[str, float] = {}  # SKU -> until when it is trusted as known

    async def call(self, what: str, work: Any, order_id: str = "") -> Any:
        """`await work`, its domain errors as problems and an unreachable backend as a 503.

        A backend that does not answer within BACKEND_WAIT_SECONDS is a 503 too: the SDK
        would otherwise retry a stopped Temporal for as long as the caller waits.
        """
        try:
            return await asyncio.wait_for(work, BACKEND_WAIT_SECONDS)
        except ApiProblem:
            raise
        except OrderflowError as err:
            raise known_problem(err, order_id) from err
        except (RPCError, OSError, TimeoutError, RuntimeError) as err:
            if isinstance(err, RPCError) and err.status == RPCStatusCode.INVALID_ARGUMENT:
                raise ApiProblem(422, "refused", "Refused", err.message, order_id=order_id) from err
            raise unavailable(what, err, order_id) from err

    async def started_input(self, order_id: str) -> OrderInput | None:
        """What the order's workflow was started with, or None if it never was."""
        client: Client = self.orders.client
        handle = client.get_workflow_handle(order_workflow_id(order_id))
        try:
            async for event in handle.fetch_history_events():
                attributes = event.workflow_execution_started_event_attributes
                values = await client.data_converter.decode(attributes.input.payloads, [OrderInput])
                started: OrderInput = values[0]
                return started
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        return None

    async def check_lines(self, order_id: str, body: OrderCreate) -> None:
        """422 naming the first line whose SKU the catalogue does not have.

        A SKU found in the catalogue is trusted for KNOWN_SKU_SECONDS without asking again
        (the common case costs no thread hop and no query); one not found is always asked for,
        so a product added a moment ago is found at once. A product removed within that time
        passes this check and the order's own stock check rejects it (REJECTED, with its reason).
        """
        if self.reads is None:
            return
        now = time.monotonic()
        wanted = {line.sku for line in body.items}
        unsure = {sku for sku in wanted if self._known_skus.get(sku, 0.0) <= now}
        if unsure:
            found = await asyncio.to_thread(self._catalogue_has, unsure)
            for sku in found:
                self._known_skus[sku] = now + KNOWN_SKU_SECONDS
            if len(self._known_skus) > KNOWN_SKUS_KEPT:
                self._known_skus = {k: t for k, t in self._known_skus.items() if t > now}
        for i, line in enumerate(body.items):
            if self._known_skus.get(line.sku, 0.0) <= now:
                raise ApiProblem(
                    422,
                    "unknown-sku",
                    "Unknown SKU",
                    f"order {order_id}: items[{i}].sku {line.sku!r} is not in the catalogue",
                    field=f"items[{i}].sku",
                    order_id=order_id,
                )

    def _catalogue_has(self, skus: set[str]) -> set[str]:
        """Which of `skus` the catalogue has (a read-only transaction)."""
        assert self.reads is not None
        with self.reads.connect() as conn:
            query = select(PRODUCTS.c.sku).where(PRODUCTS.c.sku.in_(skus))
            return set(conn.execute(query).scalars())

    def check_currency(self, order_id: str, body: OrderCreate) -> None:
        """422 unless the order names no currency or the shop's."""
        if body.currency is not None and body.currency != self.settings.currency:
            raise ApiProblem(
                422,
                "wrong-currency",
                "Wrong currency",
                f"order {order_id}: currency {body.currency} is not the shop's"
                f" ({self.settings.currency})",
                field="currency",
                order_id=order_id,
            )

    async def create(
        self, order_id: str, body: OrderCreate, *, minimal: bool = False
    ) -> tuple[int, OrderState | None]:
        """Start the order (201), or find the same one started before (200); 409 if it differs.

        A new order costs one check of the catalogue and one call to Temporal, which starts it
        and answers its state (update-with-start, handled in its first workflow task): only an
        id Temporal already knows has its first input read back and compared. If the order's
        workers do not answer within STATE_WAIT_SECONDS, it is 202 once its start is known.
        `minimal` (the caller's `Prefer: return=minimal`): a plain start, answered 202 at once.
        """
        self.check_currency(order_id, body)
        try:
            await self.call(
                "checking the catalogue",
                self.check_lines(order_id, body),
                order_id,
            )
        except ApiProblem:
            if await self.call("reading the order", self.started_input(order_id), order_id):
                return await self._again(order_id, body)  # the catalogue changed since
            raise
        lines = [OrderLine(sku=line.sku, quantity=line.quantity) for line in body.items]
        policy = policy_from_settings(self.settings)
        if body.payment_timeout_seconds is not None:
            policy.payment_timeout_seconds = body.payment_timeout_seconds
        if body.payment_retry_interval_seconds is not None:
            policy.payment_retry_interval_seconds = body.payment_retry_interval_seconds
        args = (order_id, body.customer_id, body.email, lines)
        try:
            if minimal:  # started, nothing waited for: 202 (the same id again is compared below)
                await asyncio.wait_for(
                    self.orders.start_new(*args, policy=policy), STATE_WAIT_SECONDS
                )
                return 202, None
            place = self.orders.place(*args, policy=policy)
            state = await asyncio.wait_for(place, STATE_WAIT_SECONDS)
        except WorkflowAlreadyStartedError:
            return await self._again(order_id, body)
        except (TimeoutError, RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
            # started or not? Temporal says; an order it knows is the caller's (same body: 202)
            if await self._known_as(order_id, body):
                return 202, None
            raise unavailable("starting the order", err, order_id) from err
        except OrderflowError as err:
            raise known_problem(err, order_id) from err
        return 201, state

    async def _again(self, order_id: str, body: OrderCreate) -> tuple[int, OrderState | None]:
        """The id is known: 200 with the order if it was started with this body, else 409."""
        await self._known_as(order_id, body)
        return 200, await self._state(order_id)

    async def _known_as(self, order_id: str, body: OrderCreate) -> bool:
        """Whether Temporal knows the order; 409 if it was started with another body."""
        before = await self.call("reading the order", self.started_input(order_id), order_id)
        if before is not None and (differs := _differences(before, body)):
            raise ApiProblem(
                409,
                "id-reused",
                "Order id already used",
                f"order {order_id} was started with another {', '.join(differs)}",
                field=differs[0],
                order_id=order_id,
            )
        return before is not None

    async def _state(self, order_id: str) -> OrderState | None:
        """The order's state, or None if its workers do not answer within STATE_WAIT_SECONDS."""
        try:
            return await asyncio.wait_for(self.orders.status(order_id), STATE_WAIT_SECONDS)
        except (TimeoutError, RPCError, OrderflowError):
            return None  # started: its workers have not answered yet


def wants_minimal(prefer: str | None) -> bool:
    """Whether a `Prefer` header (RFC 7240: comma-separated, parameters after ';') asks for
    `return=minimal`."""
    for preference in (prefer or "").split(","):
        token = preference.split(";", 1)[0].strip().lower().replace(" ", "")
        if token == "return=minimal":
            return True
    return False


def _differences(started: OrderInput, body: OrderCreate) -> list[str]:
    """The fields of `body` that differ from what the order was started with."""
    differs = []
    if started.customer_id != body.customer_id:
        differs.append("customer_id")
    if started.email != body.email:
        differs.append("email")
    if [(i.sku, i.quantity) for i in started.items] != [(i.sku, i.quantity) for i in body.items]:
        differs.append("items")
    return differs


def orders_router(settings: Settings, orders: OrderClient, engine: Engine | None) -> APIRouter:
    """`/api/v1`: orders, their payments, cancellation, shipment, returns; reviews."""
    api = OrdersApi(settings, orders, engine)
    router = APIRouter(
        prefix=PREFIX,
        tags=["orders"],
        dependencies=[Depends(api_key_guard(settings))],
        responses=problem_responses(),
    )
    _starting_routes(router, api, orders)
    _payment_routes(router, api, orders)
    _change_routes(router, api, orders)
    _review_routes(router, api, orders)
    return router


def _starting_routes(router: APIRouter, api: OrdersApi, orders: OrderClient) -> None:
    """Start an order, open its checkout (starting it), read it."""

    @router.post(
        "/orders",
        status_code=201,
        response_model=OrderState | Accepted,
        responses={
            200: {"model": OrderState, "description": "The same order, started before."},
            202: {"model": Accepted, "description": "Started; its state is not read yet."},
            **problem_responses(409),
        },
    )
    async def create_order(
        body: OrderCreate,
        response: Response,
        idempotency_key: Annotated[str | None, Header()] = None,
        prefer: Annotated[
            str | None,
            Header(
                description="`return=minimal` (RFC 7240): answer 202 once the order is started,"
                " without waiting for its stock check (GET it, or use checkout, for the total)"
            ),
        ] = None,
    ) -> Any:
        """Start an order: 201 with it; the same request again answers 200 with the same order."""
        order_id = order_id_of(body, idempotency_key)
        minimal = wants_minimal(prefer)
        status, state = await api.create(order_id, body, minimal=minimal)
        response.headers["Location"] = f"{PREFIX}/orders/{order_id}"
        if minimal:
            response.headers["Preference-Applied"] = "return=minimal"
        if state is None:
            response.status_code = 202
            detail = "started; its stock check answers soon: GET it"
            return Accepted(order_id=order_id, status="accepted", detail=detail)
        response.status_code = status
        return state

    @router.post(
        "/orders/{order_id}/checkout",
        response_model=CheckoutAnswer,
        responses=problem_responses(404, 409),
    )
    async def checkout(order_id: str, body: CheckoutIn) -> Any:
        """Start the order if it is not running and open its checkout, in one round trip.

        Update-with-start: the order's start and the wait for its stock reservation are one
        call to Temporal; the answer carries the gateway's checkout (Stripe's `client_secret`,
        Razorpay's order id) for exactly the order's total.
        """
        if not re.fullmatch(ORDER_ID, order_id):
            raise ApiProblem(
                422,
                "invalid-request",
                "Invalid request",
                f"order id {order_id!r}: 1 to 64 letters, digits, '.', '_' or '-'",
                field="order_id",
            )
        create = OrderCreate(
            **body.model_dump(include={"customer_id", "email", "items", "currency"})
        )
        api.check_currency(order_id, create)
        await api.call("checking the catalogue", api.check_lines(order_id, create), order_id)
        work = orders.checkout(
            order_id,
            body.customer_id,
            body.email,
            [OrderLine(sku=line.sku, quantity=line.quantity) for line in body.items],
            customer=body.customer,
            payment_method=body.payment_method,
            capture_manually=body.capture_manually,
        )
        state, opened = await api.call("opening the checkout", work, order_id)
        return CheckoutAnswer(order=state, checkout=opened)

    @router.get("/orders/{order_id}", response_model=OrderState, responses=problem_responses(404))
    async def get_order(order_id: str) -> Any:
        """The order's status, total (minor units and currency), history, payment and review."""
        return await api.call("reading the order", orders.status(order_id), order_id)


def _payment_routes(router: APIRouter, api: OrdersApi, orders: OrderClient) -> None:
    """A started order's payment: taken (answered at once) or failed (retried)."""

    @router.post(
        "/orders/{order_id}/payments",
        response_model=PaymentAck,
        responses=problem_responses(404, 409),
    )
    async def report_payment(order_id: str, body: PaymentIn) -> Any:
        """Report a payment and learn at once whether the order took it (the `pay` update).

        Accepted, the order's 1-hour timer is cancelled in the same call. Refused (another
        amount or currency, a closed order), `accepted` is false and `reason` says why.
        Reporting the same payment again gives the first answer.
        """
        payment = PaymentReceived(
            payment_id=body.payment_id,
            amount=body.amount,
            provider=body.provider,
            flagged=body.flagged,
            currency=body.currency,
        )
        work = orders.payment_received(
            order_id,
            payment,
            update_id=f"api-pay-{body.provider}-{body.payment_id}"[:200],
            wait_seconds=PAYMENT_WAIT_SECONDS,
        )
        try:
            return await api.call("reporting the payment", work, order_id)
        except WorkflowUpdateRPCTimeoutOrCancelledError as err:
            raise ApiProblem(
                503,
                "unavailable",
                "Service unavailable",
                f"order {order_id}: payment {body.payment_id} was handed to the order, which has"
                f" not answered within {PAYMENT_WAIT_SECONDS:.0f}s; report it again to learn the"
                " answer (the same payment is not applied twice)",
                order_id=order_id,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from err

    @router.post(
        "/orders/{order_id}/payment-failures",
        status_code=202,
        response_model=Accepted,
        responses=problem_responses(404, 409),
    )
    async def report_payment_failure(order_id: str, body: PaymentFailureIn) -> Any:
        """Report a failed capture: the order asks the gateway again, on its retry schedule."""
        failure = PaymentFailed(
            payment_id=body.payment_id,
            reason=body.reason,
            provider=body.provider,
            attempt_id=body.attempt_id,
        )
        await api.call("reporting the failure", orders.payment_failed(order_id, failure), order_id)
        return Accepted(order_id=order_id, status="accepted", detail="payment failure sent")


def _change_routes(router: APIRouter, api: OrdersApi, orders: OrderClient) -> None:
    """What else happens to a started order: its cancellation, shipment, return."""

    @router.post(
        "/orders/{order_id}/cancel",
        status_code=202,
        response_model=Accepted,
        responses=problem_responses(404, 409),
    )
    async def cancel_order(order_id: str, body: CancelIn | None = None) -> Any:
        """Cancel the order: a paid one is refunded, a hold released."""
        reason = body.reason if body is not None else CancelIn().reason
        await api.call("cancelling the order", orders.cancel(order_id, reason), order_id)
        return Accepted(order_id=order_id, status="accepted", detail="cancellation sent")

    @router.post(
        "/orders/{order_id}/shipment",
        status_code=202,
        response_model=Accepted,
        responses=problem_responses(404, 409),
    )
    async def ship_order(order_id: str, body: ShipmentIn | None = None) -> Any:
        """The warehouse shipped a confirmed order (carrier and tracking go in the mail)."""
        shipment = Shipment(**(body or ShipmentIn()).model_dump())
        await api.call("reporting the shipment", orders.shipped(order_id, shipment), order_id)
        return Accepted(order_id=order_id, status="accepted", detail="shipment sent")

    @router.post(
        "/orders/{order_id}/returns",
        status_code=201,
        response_model=ReturnOpened,
        responses=problem_responses(404, 409),
    )
    async def request_return(order_id: str, body: ReturnIn) -> Any:
        """Ask to return a shipped order: a manual review opens; approval refunds it."""
        work = orders.request_return(order_id, body.reason)
        review_id = await api.call("opening the return", work, order_id)
        return ReturnOpened(order_id=order_id, review_id=review_id)


def _review_routes(router: APIRouter, api: OrdersApi, orders: OrderClient) -> None:
    """Manual reviews: the pending ones, and a decision."""

    @router.get("/reviews", response_model=list[PendingReview])
    async def list_reviews() -> Any:
        """Reviews waiting for a decision, oldest first."""
        return await api.call("listing reviews", orders.pending_reviews())

    @router.post(
        "/reviews/{review_id}/decision",
        response_model=ReviewOutcome,
        responses=problem_responses(404),
    )
    async def decide_review(review_id: str, body: DecisionIn) -> Any:
        """Approve or reject a pending review."""
        decision = ReviewDecision(approve=body.approve, reviewer=body.reviewer, note=body.note)
        return await api.call("deciding the review", orders.decide_review(review_id, decision))
