"""The payment webhook worker: record each gateway event once, then hand it to the order workflow."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from bullmq import UnrecoverableError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlmodel import Session, col, func, select
from temporalio.client import (
    RPCTimeoutOrCancelledError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from bridge.errors import MalformedJobError, RetryLater
from bridge.job import Job
from orderflow.contracts.order import (
    PAID_STATUSES,
    OrderStatus,
    PaymentAck,
    PaymentFailed,
    PaymentReceived,
)
from orderflow.contracts.payment import (
    WEBHOOK_QUEUE,
    PaymentKind,
    PaymentStatus,
    WebhookEventStatus,
    WebhookJob,
)
from orderflow.db import Order, Payment, WebhookEvent
from orderflow.errors import OrderClosedError, OrderflowError, UnknownOrderError
from orderflow.money import format_money
from payments import providers
from payments.events import (
    MONEY_KINDS,
    EventKind,
    GatewayEvent,
    MalformedEventError,
    amount_problem,
    currency_problem,
    risky,
)
from payments.gateway import GatewayConfigError, GatewayUnavailableError, PaymentGateway
from payments.reconciliation import APPLY_GRACE_MINUTES, reconcile

log = logging.getLogger("orderflow.webhooks")

OUTAGE_WINDOW_SECONDS = 2 * 3600.0  # an event rides out a Temporal/database outage this long
UNKNOWN_ORDER_WINDOW_SECONDS = 600.0  # an order the workflow does not know yet may still start
MAX_RETRY_DELAY_MS = 60_000  # the cap of the backoff while waiting
REFUND_GONE = ("failed", "canceled")  # a listed refund in these states gave nothing back
# the pay update answers in well under a second, unless it first releases a refused hold (up to
# ~10 min of gateway retries, GATEWAY_CALL_RETRY): the job waits this long, then from the
# delayed set, and asks again under the same update id (no second update, no timed-out attempt)
UPDATE_WAIT_SECONDS = 20.0
UPDATE_RECHECK_MS = 2000  # how soon a job whose update is still running asks again
# an event recorded with one of these was handled: a redelivery is a no-op
DONE_STATUSES = (
    WebhookEventStatus.APPLIED,
    WebhookEventStatus.IGNORED,
    WebhookEventStatus.DUPLICATE,
)
# events about one payment of an order: they must name the order
PAYMENT_KINDS = (EventKind.PAYMENT_RECEIVED, EventKind.PAYMENT_AUTHORISED, EventKind.PAYMENT_FAILED)
# gRPC codes of a server that is away or overloaded, not of a request that is wrong
OUTAGE_CODES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.INTERNAL,
    }
)


class RiskUnknownError(OrderflowError):
    """Radar's risk of a payment's charge could not be read: the payment waits (retried like an
    outage) rather than reach the order unflagged."""

    def __init__(self, event: GatewayEvent, err: BaseException) -> None:
        super().__init__(
            f"{event.provider} event {event.event_id} ({event.type}): the Radar risk of charge"
            f" {event.risk_charge} could not be read ({err}); payment {event.payment_id} is not"
            f" passed to order {event.order_id or '(none)'} until it is"
        )
        self.event_id = event.event_id


@runtime_checkable
class RiskReader(Protocol):
    """A gateway that can say how risky one of its charges is (StripeGateway)."""

    def charge_risk(self, charge_id: str) -> str:
        """Radar's risk level of the charge ("" if none); raises if Stripe cannot say."""
        ...


def is_outage(err: BaseException) -> bool:
    """Whether `err` says a server we need is away (retry) rather than the event being wrong."""
    if isinstance(err, RiskUnknownError):
        return True
    if isinstance(err, RPCError):
        return err.status in OUTAGE_CODES
    if isinstance(err, RPCTimeoutOrCancelledError | WorkflowUpdateRPCTimeoutOrCancelledError):
        return True
    if isinstance(err, OperationalError | InterfaceError):  # database away or locked
        return True
    return isinstance(err, ConnectionError | TimeoutError | OSError)


def _backoff_ms(age_seconds: float) -> int:
    """Grows with how long the job has waited (a quarter of it), from 1 s up to a minute."""
    return int(min(MAX_RETRY_DELAY_MS, max(1000.0, age_seconds * 250)))


class ReconciliationIncompleteError(OrderflowError):
    """The gateway stayed away past the outage window: the reconciliation's attempt fails."""


class ReconciliationRefusedError(UnrecoverableError, OrderflowError):
    """The gateway refused our key: no retry mends it, the job fails for an operator at once."""


class WebhookEventError(UnrecoverableError, OrderflowError):
    """An event that retrying cannot fix; the job goes to the dead-letter queue for an operator."""

    def __init__(
        self,
        event: GatewayEvent,
        problem: str,
        status: WebhookEventStatus = WebhookEventStatus.REJECTED,
    ) -> None:
        order = event.order_id or "(none)"
        super().__init__(
            f"{event.provider} event {event.event_id} ({event.type}) for order {order}: {problem}"
        )
        self.event_id = event.event_id
        self.order_id = event.order_id
        self.status = status  # how the event is recorded: REJECTED, or UNAPPLIED for money


class OrderNotYetKnownError(OrderflowError):
    """A charge event came before any event that names its order; retried, then dead-lettered."""

    def __init__(self, event: GatewayEvent) -> None:
        super().__init__(
            f"{event.provider} event {event.event_id} ({event.type}): payment {event.payment_id}"
            " has no order_id and no earlier event names its order; retrying"
        )
        self.event_id = event.event_id


class Orders(Protocol):
    """The part of OrderClient the worker uses."""

    async def payment_received(
        self,
        order_id: str,
        payment: PaymentReceived,
        *,
        update_id: str = "",
        wait_seconds: float | None = None,
    ) -> PaymentAck:
        """Report a payment; the answer says whether the order took it.

        The same `update_id` again waits for that update; no answer within `wait_seconds`
        raises WorkflowUpdateRPCTimeoutOrCancelledError.
        """
        ...

    async def payment_failed(self, order_id: str, failure: PaymentFailed) -> None:
        """Report a failed capture."""
        ...


def _minor_amount(event: GatewayEvent) -> int:
    amount = event.amount_minor
    if problem := amount_problem(amount):
        raise WebhookEventError(event, f"amount {amount!r} is {problem}"[:300])
    assert isinstance(amount, int)
    return amount


def check_event(event: GatewayEvent) -> None:
    """Raise WebhookEventError if the event lacks what its kind needs."""
    if event.kind not in {k.value for k in EventKind} or event.kind == EventKind.IGNORED:
        raise WebhookEventError(event, f"kind {event.kind!r} is not one the worker applies")
    if event.kind in PAYMENT_KINDS and not event.order_id:
        try:
            where = providers.get(event.provider).order_id_field
        except providers.UnknownProviderError:
            where = f"the event (provider {event.provider!r} is not registered)"
        raise WebhookEventError(event, f"no order_id in {where}")
    if not event.payment_id:
        raise WebhookEventError(event, "no payment id")
    if event.kind in MONEY_KINDS:
        _minor_amount(event)
        if problem := currency_problem(event.currency):
            code = "" if event.currency in ("", None) else f" {event.currency!r}"[:40]
            raise WebhookEventError(event, f"currency{code} is {problem}")


class WebhookProcessor:
    """Processor of payment-webhook-queue: gateway events and the reconciliation job."""

    def __init__(
        self,
        orders: Orders,
        engine: Engine,
        *,
        queue: str = WEBHOOK_QUEUE,
        outage_window_seconds: float = OUTAGE_WINDOW_SECONDS,
        unknown_order_window_seconds: float = UNKNOWN_ORDER_WINDOW_SECONDS,
        gateway: PaymentGateway | None = None,
        update_wait_seconds: float = UPDATE_WAIT_SECONDS,
    ) -> None:
        self.orders = orders
        self.gateway = gateway  # reconciliation compares with its list (None: simulated)
        self.engine = engine
        self.queue = queue
        self.outage_window_seconds = outage_window_seconds
        self.unknown_order_window_seconds = unknown_order_window_seconds
        self.update_wait_seconds = update_wait_seconds  # keep it below the job's timeout

    async def __call__(self, job: Job) -> dict[str, Any]:
        """Run one job by its name."""
        if job.name == WebhookJob.RECONCILIATION:
            return await self.reconcile(job)
        if providers.by_job_name(job.name) is None:
            known = ", ".join(
                [WebhookJob.RECONCILIATION, *(p.job_name for p in providers.all_providers())]
            )
            raise MalformedJobError(
                self.queue, job.name, job.id, f"unknown job name (expected one of {known})"
            )
        if not isinstance(job.data, dict):
            raise MalformedJobError(self.queue, job.name, job.id, "data is not an object")
        try:
            event = GatewayEvent.from_job(job.data)
        except MalformedEventError as err:
            raise MalformedJobError(self.queue, job.name, job.id, str(err)) from err
        age = max(0.0, time.time() - job.timestamp / 1000) if job.timestamp else 0.0
        try:
            return await self.apply(event, final=age >= self.unknown_order_window_seconds)
        except (UnknownOrderError, OrderNotYetKnownError) as err:
            # the order service may start the workflow a moment after the gateway calls
            raise RetryLater(_backoff_ms(age), f"{err}; retrying for a while") from err
        except Exception as err:
            if not is_outage(err) or age >= self.outage_window_seconds:
                raise  # counted: after the job's attempts it goes to the dead-letter queue
            raise RetryLater(
                _backoff_ms(age), f"{event.provider} event {event.event_id}: outage: {err!r}"
            ) from err

    async def reconcile(self, job: Job) -> dict[str, Any]:
        """Run the reconciliation; its report is the job's result only once the gateway answered.

        While the gateway is away the report of our own tables is the job's progress and the job
        waits in the delayed set (no attempt used) for up to the outage window, then fails
        (attempts, then the dead-letter queue): a report without the comparison never completes it.
        """
        data = job.data if isinstance(job.data, dict) else {}
        report = await asyncio.to_thread(
            reconcile, self.engine, gateway=self.gateway, **_reconcile_args(job, data)
        )
        if not report["gateway_error"]:
            return report
        await job.update_progress(report)
        reason = (
            f"{job.name} job {job.id}: the {report['gateway']} comparison was not done"
            f" ({report['gateway_error']}); our own tables: {len(report['mismatches'])}"
            " mismatch(es), in the job's progress"
        )
        if report.get("gateway_refused"):
            raise ReconciliationRefusedError(f"{reason}; fix the gateway's key setting")
        age = max(0.0, time.time() - job.timestamp / 1000) if job.timestamp else 0.0
        if age >= self.outage_window_seconds:
            raise ReconciliationIncompleteError(reason)
        raise RetryLater(_backoff_ms(age), f"{reason}; retrying for a while")

    async def apply(self, event: GatewayEvent, *, final: bool = True) -> dict[str, Any]:
        """Record the event once and apply it; an already applied event is a no-op.

        With final=False an unknown order raises UnknownOrderError or OrderNotYetKnownError
        (the caller retries); with final=True it is rejected for good.
        """
        row = await asyncio.to_thread(self._record, event)
        if row.status in DONE_STATUSES:
            return {"event_id": event.event_id, "status": "duplicate", "order_id": row.order_id}
        if not event.order_id and event.payment_id:
            event.order_id = await asyncio.to_thread(self._order_of, event)
        if not event.order_id and event.type.startswith("charge."):
            # Stripe's charge events may lack the PaymentIntent's metadata; its own event names it
            if not final:
                raise OrderNotYetKnownError(event)
            err = WebhookEventError(
                event, f"payment {event.payment_id} names no order and no other event does"
            )
            await asyncio.to_thread(self._finish, event, err.status, str(err))
            raise err
        try:
            check_event(event)
            handler = self._handlers()[event.kind]
            status, detail = await handler(event, final)
        except WebhookEventError as err:
            await asyncio.to_thread(self._finish, event, err.status, str(err))
            log.error("%s", err)
            raise
        await asyncio.to_thread(self._finish, event, status, detail)
        log.info("%s event %s: %s %s", event.provider, event.event_id, status, detail)
        return {
            "event_id": event.event_id,
            "status": status.lower(),
            "order_id": event.order_id,
            "detail": detail,
        }

    def _handlers(
        self,
    ) -> dict[str, Callable[[GatewayEvent, bool], Awaitable[tuple[WebhookEventStatus, str]]]]:
        return {
            EventKind.PAYMENT_RECEIVED: self._payment_received,
            EventKind.PAYMENT_AUTHORISED: self._payment_received,  # the order captures it
            EventKind.PAYMENT_FAILED: self._payment_failed,
            EventKind.REFUND: self._refund,
            EventKind.REFUND_FAILED: self._refund_failed,
        }

    async def _payment_received(
        self, event: GatewayEvent, final: bool
    ) -> tuple[WebhookEventStatus, str]:
        amount = _minor_amount(event)
        held = event.kind == EventKind.PAYMENT_AUTHORISED
        event.flagged = event.flagged or await self._radar_flag(event)
        payment = PaymentReceived(
            payment_id=event.payment_id,
            amount=amount,
            provider=event.provider,
            flagged=event.flagged,
            currency=event.currency,
            authorised_only=held,
        )
        what = "authorisation" if held else "payment"
        money = f"{what} {event.payment_id} of {format_money(amount, event.currency)}"
        # a refused authorisation is released by the order: nothing was taken to refund
        todo = "" if held else "; refund it or reopen"
        try:
            ack = await self.orders.payment_received(
                event.order_id,
                payment,
                update_id=f"pay-{event.job_id}",
                wait_seconds=self.update_wait_seconds,
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError as err:
            raise RetryLater(
                UPDATE_RECHECK_MS,
                f"{event.provider} event {event.event_id}: order {event.order_id} is still"
                f" answering {money} (a refused hold being released); asking again",
            ) from err
        except UnknownOrderError as err:
            if not final:
                raise
            raise WebhookEventError(event, f"{money} for an unknown order ({err})") from err
        except OrderClosedError as err:
            if kept := await asyncio.to_thread(self._kept, event):
                return WebhookEventStatus.DUPLICATE, f"{money}: {kept}"
            closed = "; release it at the gateway" if held else todo  # no order left to do it
            raise _unapplied(event, f"{money} not applied: {err}{closed}") from err
        if not ack.accepted:
            # a closed order refuses everything, its own payment too: only one it does not
            # hold is money to give back
            if kept := await asyncio.to_thread(self._kept, event):
                return WebhookEventStatus.DUPLICATE, f"{money}: {kept}"
            raise _unapplied(event, f"{money} not applied: {ack.reason}{todo}")
        detail = f"{money} accepted, order {ack.status} {ack.reason}".strip()
        if event.flagged and ack.status in PAID_STATUSES:
            # the review decision was taken without the flag: only a person can act on it now
            detail = (
                f"{money} flagged as risky after order {event.order_id} was {ack.status}:"
                " review it before it ships (or refund it if it has)"
            )
            log.error("%s event %s: %s", event.provider, event.event_id, detail)
        return WebhookEventStatus.APPLIED, detail

    async def _radar_flag(self, event: GatewayEvent) -> bool:
        """Whether Radar flags the charge the event names but does not describe (Stripe's
        payment_intent.* events); a charge whose risk cannot be read holds the payment back."""
        if not event.risk_charge:
            return False
        if not isinstance(self.gateway, RiskReader):
            log.warning(
                "%s event %s: no Stripe API configured to read the risk of charge %s: order %s"
                " reviews payment %s",
                event.provider, event.event_id, event.risk_charge, event.order_id,
                event.payment_id,
            )  # fmt: skip
            return True
        try:
            level = await asyncio.to_thread(self.gateway.charge_risk, event.risk_charge)
        except Exception as err:
            raise RiskUnknownError(event, err) from err
        return risky(level)

    async def _payment_failed(
        self, event: GatewayEvent, final: bool
    ) -> tuple[WebhookEventStatus, str]:
        failure = PaymentFailed(
            payment_id=event.payment_id,
            reason=event.reason or f"{event.type} from {event.provider}",
            provider=event.provider,
            attempt_id=event.attempt_id,
        )
        try:
            await self.orders.payment_failed(event.order_id, failure)
        except UnknownOrderError as err:
            if not final:
                raise
            raise WebhookEventError(event, f"payment failure for an unknown order ({err})") from err
        except OrderClosedError as err:
            return WebhookEventStatus.IGNORED, f"order already ended, failure not needed: {err}"
        return WebhookEventStatus.APPLIED, f"payment {event.payment_id} failed: {failure.reason}"

    async def _refund(self, event: GatewayEvent, final: bool) -> tuple[WebhookEventStatus, str]:
        return await asyncio.to_thread(self._record_refund, event)

    async def _refund_failed(
        self, event: GatewayEvent, final: bool
    ) -> tuple[WebhookEventStatus, str]:
        """A refund that ended without paying out: the money is owed again, an operator repays.

        Its row is marked FAILED and the order REFUND_FAILED (as /ops and the reconciliation
        show it); the event is recorded UNAPPLIED and its job dead-lettered with the reason.
        """
        problem = await asyncio.to_thread(self._record_refund_failure, event)
        raise _unapplied(event, problem)

    # ---- database (run in a thread: SQLAlchemy sessions block) ------------------------------

    def _record(self, event: GatewayEvent) -> WebhookEvent:
        # an impossible amount is recorded as 0 (the check that follows rejects the event with
        # it): the row must be written whatever was sent
        minor = 0 if amount_problem(event.amount_minor) else event.amount_minor
        with Session(self.engine) as session:
            found = self._find(session, event)
            if found is not None:
                return found
            row = WebhookEvent(
                provider=event.provider,
                event_id=event.event_id,
                type=event.type,
                order_id=event.order_id,
                payment_id=event.payment_id,
                amount=minor,
                currency=event.currency,
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # a concurrent delivery of the same event recorded it first
                session.rollback()
                found = self._find(session, event)
                assert found is not None
                return found
            session.refresh(row)
            return row

    @staticmethod
    def _find(session: Session, event: GatewayEvent) -> WebhookEvent | None:
        return session.exec(
            select(WebhookEvent).where(
                WebhookEvent.provider == event.provider, WebhookEvent.event_id == event.event_id
            )
        ).first()

    def _finish(self, event: GatewayEvent, status: str, detail: str) -> None:
        with Session(self.engine) as session:
            row = self._find(session, event)
            if row is None:
                return
            row.status, row.detail = status, detail[:2000]
            row.order_id = row.order_id or event.order_id
            row.processed_at = datetime.now(UTC)
            session.add(row)
            session.commit()

    def _record_refund(self, event: GatewayEvent) -> tuple[WebhookEventStatus, str]:
        amount = _minor_amount(event)
        refund_id = event.refund_id or f"{event.payment_id}-refund-{event.event_id}"
        with Session(self.engine) as session:
            order_id = event.order_id
            if not order_id:
                raise WebhookEventError(
                    event, f"refund {refund_id} of payment {event.payment_id}: no order known"
                )
            listed = self._refunds_listed(event)
            if listed is not None:
                return self._record_listed(session, event, order_id, *listed)
            exists = session.exec(
                select(Payment).where(
                    Payment.provider == event.provider, Payment.payment_id == refund_id
                )
            ).first()
            if exists is None and event.refund_cumulative:
                # the running total: only what it adds to the refunds already recorded is new
                before = session.exec(
                    select(func.coalesce(func.sum(Payment.amount), 0)).where(
                        Payment.provider == event.provider,
                        Payment.kind == PaymentKind.REFUND,
                        Payment.refund_of == event.payment_id,
                    )
                ).one()
                amount -= int(before)
            if exists is None and amount > 0:
                session.add(
                    Payment(
                        order_id=order_id,
                        provider=event.provider,
                        payment_id=refund_id,
                        kind=PaymentKind.REFUND,
                        amount=amount,
                        currency=event.currency,
                        status=PaymentStatus.SUCCEEDED,
                        detail=f"{event.type} {event.event_id} for payment {event.payment_id}",
                        refund_of=event.payment_id,
                    )
                )
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
        return (
            WebhookEventStatus.APPLIED,
            f"refund {refund_id} of {format_money(amount, event.currency)} recorded",
        )

    def _refunds_listed(self, event: GatewayEvent) -> tuple[list[tuple[str, int]], int] | None:
        """(id, amount) of each refund of the payment that gave money back, and their total.

        From the event's own list, or for a running total without one, from the gateway's list:
        a running total alone cannot say which refund it adds, so recording it under an id of
        its own counted a refund twice once its real row came in. None: neither is known.
        """
        given = [r for r in event.refunds_listed if r.get("status") not in REFUND_GONE]
        listed = [(str(r["id"]), r["amount"]) for r in given if _is_amount(r.get("amount"))]
        total = event.refunded_total
        if not event.refunds_listed and event.refund_cumulative and self.gateway is not None:
            try:
                found = self.gateway.list_refunds(event.payment_id)
            except (GatewayUnavailableError, GatewayConfigError) as err:
                log.warning("%s; counting the running total instead", err)
                return None
            listed = [(r.refund_id, r.amount) for r in found if r.status not in REFUND_GONE]
            total = sum(amount for _, amount in listed)
        if not listed:
            return None
        return listed, total if _is_amount(total) else sum(amount for _, amount in listed)

    def _record_listed(
        self,
        session: Session,
        event: GatewayEvent,
        order_id: str,
        listed: list[tuple[str, int]],
        total: int,
    ) -> tuple[WebhookEventStatus, str]:
        """Record each listed refund not yet in, by its own id, never past the running total."""
        mine = select(Payment).where(
            Payment.provider == event.provider,
            Payment.kind == PaymentKind.REFUND,
            Payment.refund_of == event.payment_id,
        )
        rows = session.exec(mine).all()
        known = {r.payment_id for r in rows}
        counted = sum(r.amount for r in rows if r.status == PaymentStatus.SUCCEEDED)
        added = []
        for refund_id, amount in reversed(listed):  # oldest first, as they were made
            # over the total: the refund is in already under another id (a running-total row)
            if refund_id in known or counted + amount > total:
                continue
            session.add(
                Payment(
                    order_id=order_id,
                    provider=event.provider,
                    payment_id=refund_id,
                    kind=PaymentKind.REFUND,
                    amount=amount,
                    currency=event.currency,
                    status=PaymentStatus.SUCCEEDED,
                    detail=f"{event.type} {event.event_id} for payment {event.payment_id}",
                    refund_of=event.payment_id,
                )
            )
            try:
                session.commit()
            except IntegrityError:  # the activity recorded it meanwhile
                session.rollback()
                continue
            counted += amount
            added.append(f"{refund_id} of {format_money(amount, event.currency)}")
        return (
            WebhookEventStatus.APPLIED,
            f"refund(s) of payment {event.payment_id} recorded: {', '.join(added) or 'none new'}",
        )

    def _record_refund_failure(self, event: GatewayEvent) -> str:
        amount = _minor_amount(event)
        if not event.refund_id:
            raise WebhookEventError(
                event, f"a failed refund of payment {event.payment_id} with no refund id"
            )
        reason = event.reason or f"{event.type} from {event.provider}"
        with Session(self.engine) as session:
            row = session.exec(
                select(Payment).where(
                    Payment.provider == event.provider, Payment.payment_id == event.refund_id
                )
            ).first()
            order_id = event.order_id or (row.order_id if row is not None else "")
            if not order_id:
                raise WebhookEventError(
                    event,
                    f"failed refund {event.refund_id} of payment {event.payment_id}: no order known",
                )
            if row is None:  # the refund's own row is not in yet (or it was made elsewhere)
                row = Payment(
                    order_id=order_id,
                    provider=event.provider,
                    payment_id=event.refund_id,
                    kind=PaymentKind.REFUND,
                    amount=amount,
                    currency=event.currency,
                    status=PaymentStatus.FAILED,
                    refund_of=event.payment_id,
                )
            row.status = PaymentStatus.FAILED
            row.detail = f"{event.type} {event.event_id}: {reason}"[:2000]
            session.add(row)
            order = session.get(Order, order_id)
            if order is not None:
                order.status = OrderStatus.REFUND_FAILED
                order.updated_at = datetime.now(UTC)
                session.add(order)
            money = format_money(row.amount, row.currency or event.currency)
            session.commit()
        return (
            f"refund {event.refund_id} of {money} for payment {event.payment_id} failed at"
            f" {event.provider} ({reason}): order {order_id} is REFUND_FAILED, repay the"
            " customer by hand"
        )

    def _kept(self, event: GatewayEvent) -> str:
        """How the order already holds this payment ("" if it does not): its capture row."""
        with Session(self.engine) as session:
            row = session.exec(
                select(Payment).where(
                    Payment.provider == event.provider,
                    Payment.payment_id == event.payment_id,
                    Payment.order_id == event.order_id,
                    Payment.kind == PaymentKind.CAPTURE,
                )
            ).first()
        if row is None:
            return ""
        return (
            f"order {event.order_id} already holds it (payments row {row.id},"
            f" {row.status} {format_money(row.amount, row.currency)}): a late duplicate,"
            " nothing to do"
        )

    def _order_of(self, event: GatewayEvent) -> str:
        """The order a gateway payment id belongs to, from the payments or earlier events."""
        with Session(self.engine) as session:
            return self._order_of_payment(session, event)

    @staticmethod
    def _order_of_payment(session: Session, event: GatewayEvent) -> str:
        capture = session.exec(
            select(Payment.order_id).where(
                Payment.provider == event.provider, Payment.payment_id == event.payment_id
            )
        ).first()
        if capture:
            return capture
        earlier = session.exec(
            select(WebhookEvent.order_id)
            .where(
                WebhookEvent.provider == event.provider,
                WebhookEvent.payment_id == event.payment_id,
                WebhookEvent.order_id != "",
            )
            .order_by(col(WebhookEvent.id))
        ).first()
        return earlier or ""


def _is_amount(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _unapplied(event: GatewayEvent, problem: str) -> WebhookEventError:
    return WebhookEventError(event, problem, WebhookEventStatus.UNAPPLIED)


def _reconcile_args(job: Job, data: dict[str, Any]) -> dict[str, Any]:
    hours = data.get("window_hours", 24.0)
    if not isinstance(hours, int | float) or isinstance(hours, bool) or hours <= 0:
        raise MalformedJobError(
            job.queue, job.name, job.id, f"window_hours {hours!r} is not a positive number"
        )
    stale = data.get("stale_minutes", APPLY_GRACE_MINUTES)
    if not isinstance(stale, int | float) or isinstance(stale, bool) or stale < 0:
        raise MalformedJobError(
            job.queue, job.name, job.id, f"stale_minutes {stale!r} is not a number of minutes"
        )
    return {"window_hours": float(hours), "stale_minutes": float(stale)}
