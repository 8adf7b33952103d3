"""The payment webhook worker: record each gateway event once, then hand it to the order workflow.

What it does with each kind is in payment_events.py (payments to the order) and
refund_events.py (refunds into the payments table); event_log.py keeps each event once and
webhook_errors.py says which failures are the event's and which an outage's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.engine import Engine

from bridge.errors import MalformedJobError, RetryLater
from bridge.job import Job
from orderflow.contracts.payment import WEBHOOK_QUEUE, WebhookEventStatus, WebhookJob
from orderflow.errors import UnknownOrderError
from payments import providers
from payments.event_log import DONE_STATUSES, finish_event, order_of_event, record_event
from payments.events import EventKind, GatewayEvent, MalformedEventError
from payments.gateway import PaymentGateway
from payments.payment_events import Orders, PaymentEvents
from payments.reconciliation import APPLY_GRACE_MINUTES, reconcile
from payments.refund_events import record_refund, record_refund_failure
from payments.webhook_errors import (
    OrderNotYetKnownError,
    ReconciliationIncompleteError,
    ReconciliationRefusedError,
    WebhookEventError,
    check_event,
    is_outage,
    unapplied,
)

log = logging.getLogger("orderflow.webhooks")

OUTAGE_WINDOW_SECONDS = 2 * 3600.0  # an event rides out a Temporal/database outage this long
UNKNOWN_ORDER_WINDOW_SECONDS = 600.0  # an order the workflow does not know yet may still start
MAX_RETRY_DELAY_MS = 60_000  # the cap of the backoff while waiting
# the pay update answers in well under a second, unless it first releases a refused hold (up to
# ~10 min of gateway retries, GATEWAY_CALL_RETRY): the job waits this long, then from the
# delayed set, and asks again under the same update id (no second update, no timed-out attempt)
UPDATE_WAIT_SECONDS = 20.0

# applies one kind of event: (event, final) -> how it is recorded, and why
Handler = Callable[[GatewayEvent, bool], Awaitable[tuple[WebhookEventStatus, str]]]


def _backoff_ms(age_seconds: float) -> int:
    """Grows with how long the job has waited (a quarter of it), from 1 s up to a minute."""
    return int(min(MAX_RETRY_DELAY_MS, max(1000.0, age_seconds * 250)))


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
        row = await asyncio.to_thread(record_event, self.engine, event)
        if row.status in DONE_STATUSES:
            return {"event_id": event.event_id, "status": "duplicate", "order_id": row.order_id}
        if not event.order_id and event.payment_id:
            event.order_id = await asyncio.to_thread(order_of_event, self.engine, event)
        if not event.order_id and event.type.startswith("charge."):
            # Stripe's charge events may lack the PaymentIntent's metadata; its own event names it
            if not final:
                raise OrderNotYetKnownError(event)
            err = WebhookEventError(
                event, f"payment {event.payment_id} names no order and no other event does"
            )
            await asyncio.to_thread(finish_event, self.engine, event, err.status, str(err))
            raise err
        try:
            check_event(event)
            handler = self._handlers()[event.kind]
            status, detail = await handler(event, final)
        except WebhookEventError as err:
            await asyncio.to_thread(finish_event, self.engine, event, err.status, str(err))
            log.error("%s", err)
            raise
        await asyncio.to_thread(finish_event, self.engine, event, status, detail)
        log.info("%s event %s: %s %s", event.provider, event.event_id, status, detail)
        return {
            "event_id": event.event_id,
            "status": status.lower(),
            "order_id": event.order_id,
            "detail": detail,
        }

    def _handlers(self) -> dict[str, Handler]:
        payments = PaymentEvents(self.orders, self.engine, self.gateway, self.update_wait_seconds)
        return {
            EventKind.PAYMENT_RECEIVED: payments.received,
            EventKind.PAYMENT_AUTHORISED: payments.received,  # the order captures it
            EventKind.PAYMENT_FAILED: payments.failed,
            EventKind.REFUND: self._refund,
            EventKind.REFUND_FAILED: self._refund_failed,
        }

    async def _refund(self, event: GatewayEvent, final: bool) -> tuple[WebhookEventStatus, str]:
        return await asyncio.to_thread(record_refund, self.engine, self.gateway, event)

    async def _refund_failed(
        self, event: GatewayEvent, final: bool
    ) -> tuple[WebhookEventStatus, str]:
        """A refund that ended without paying out: the money is owed again, an operator repays.

        Its row is marked FAILED and the order REFUND_FAILED (as /ops and the reconciliation
        show it); the event is recorded UNAPPLIED and its job dead-lettered with the reason.
        """
        problem = await asyncio.to_thread(record_refund_failure, self.engine, event)
        raise unapplied(event, problem)


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
