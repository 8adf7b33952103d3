"""Payment reconciliation: what the gateways told us and what we recorded, against the orders."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from orderflow.contracts.order import ENDED_UNPAID_STATUSES, PAID_STATUSES, OrderStatus
from orderflow.contracts.payment import (
    GatewayPayment,
    PaymentKind,
    PaymentStatus,
    WebhookEventStatus,
    WebhookJob,
)
from orderflow.db import Order, Payment, WebhookEvent
from orderflow.money import format_money
from payments import providers
from payments.events import EventKind
from payments.gateway import GatewayConfigError, GatewayUnavailableError, PaymentGateway

log = logging.getLogger("orderflow.reconciliation")

RECORD_GRACE = timedelta(minutes=10)  # an accepted payment is in the payments table well before
# an event still RECEIVED this long after it arrived is stuck (webhook retries run far faster)
APPLY_GRACE_MINUTES = 30.0


def _types(kind: EventKind) -> set[str]:
    return providers.event_types(kind)


@dataclass
class Mismatch:
    """One disagreement an operator should look at."""

    kind: str
    order_id: str
    detail: str
    payment_id: str = ""


def reconcile(
    engine: Engine,
    *,
    window_hours: float = 24.0,
    now: datetime | None = None,
    stale_minutes: float = APPLY_GRACE_MINUTES,
    gateway: PaymentGateway | None = None,
) -> dict[str, Any]:
    """Compare captures, refunds and gateway events with the orders touched in the window.

    Reports: money kept on a cancelled order, a paid order without a capture, a capture that
    differs from the total, refunds above captures, gateway payments that no order took, and
    accepted gateway payments never recorded. With a `gateway` that keeps its own books
    (Stripe, Razorpay), also its list against our payments table (gateway_mismatches).
    Returns the report (the job's return value). When the gateway cannot be asked, the checks
    of our own tables are still reported, with gateway_compared False and gateway_error saying
    why (gateway_refused: it refused our key, which no wait mends): their mismatches then say
    nothing about the gateway's side.
    """
    now = now or datetime.now(UTC)
    since = now - timedelta(hours=window_hours)
    found: list[Mismatch] = []
    with Session(engine) as session:
        orders = session.exec(select(Order).where(col(Order.updated_at) >= since)).all()
        ids = [o.id for o in orders]
        payments = session.exec(
            select(Payment).where(
                col(Payment.order_id).in_(ids), Payment.status == PaymentStatus.SUCCEEDED
            )
        ).all()
        events = session.exec(
            select(WebhookEvent).where(col(WebhookEvent.received_at) >= since)
        ).all()
        recorded = {
            (p.provider, p.payment_id)
            for p in session.exec(
                select(Payment).where(
                    col(Payment.payment_id).in_([e.payment_id for e in events if e.payment_id])
                )
            ).all()
        }
    captured: dict[str, int] = defaultdict(int)  # minor units, per order
    refunded: dict[str, int] = defaultdict(int)
    for p in payments:
        (captured if p.kind == PaymentKind.CAPTURE else refunded)[p.order_id] += p.amount
    unapplied = _unapplied_by_order(events, recorded)
    for order in orders:
        found += _order_mismatches(
            order, captured[order.id], refunded[order.id], unapplied[order.id]
        )
    found += _event_mismatches(events, recorded, now, timedelta(minutes=stale_minutes))
    listed: list[GatewayPayment] = []
    error, refused = "", False
    if gateway is not None:
        try:
            listed = gateway.list_payments(since)
            found += gateway_mismatches(engine, gateway, listed, since)
        except (GatewayUnavailableError, GatewayConfigError) as err:
            listed, error = [], str(err)  # the gateway errors never carry a key
            refused = isinstance(err, GatewayConfigError)  # our key: waiting will not help
            log.warning("reconciliation: the %s comparison was not done: %s", gateway.name, error)
    for m in found:
        log.warning("reconciliation: %s order %s: %s", m.kind, m.order_id or "-", m.detail)
    return {
        "checked_orders": len(orders),
        "checked_events": len(events),
        "gateway": gateway.name if gateway is not None else "",
        "gateway_compared": gateway is not None and not error,
        "gateway_error": error,
        "gateway_refused": refused,
        "checked_gateway_payments": len(listed),
        "since": since.isoformat(),
        "mismatches": [asdict(m) for m in found],
    }


def gateway_mismatches(
    engine: Engine, gateway: PaymentGateway, listed: list[GatewayPayment], since: datetime
) -> list[Mismatch]:
    """The gateway's payments against our payments table, each mismatch with both sides.

    captured_not_recorded: the gateway took money we have no capture for; capture_not_at_gateway:
    a capture of ours the gateway has not taken; gateway_amount_mismatch: amount or currency
    differ; refund_not_at_gateway / refund_not_recorded: the refunded sums differ.
    """
    theirs = {p.payment_id: p for p in listed}
    captures, refunded = _our_books(engine, gateway.name, list(theirs), since)
    found: list[Mismatch] = []
    for payment_id in captures:
        if payment_id not in theirs:
            fetched = gateway.fetch(payment_id)  # listed before the window, or not there at all
            if fetched is not None:
                theirs[payment_id] = fetched
    for t in theirs.values():
        if t.captured <= 0:
            continue  # authorised or failed: no money moved
        there = f"{gateway.name}: {t.payment_id} captured {format_money(t.captured, t.currency)}"
        mine = captures.get(t.payment_id)
        if mine is None:
            found.append(
                Mismatch(
                    "captured_not_recorded",
                    t.order_id,
                    f"{there} for order {t.order_id or '(none in metadata)'}; orderflow: no"
                    " capture recorded",
                    t.payment_id,
                )
            )
            continue
        here = f"orderflow: {format_money(mine.amount, mine.currency or t.currency)}"
        if mine.amount != t.captured or (mine.currency and mine.currency != t.currency):
            found.append(
                Mismatch("gateway_amount_mismatch", mine.order_id, f"{there}; {here}", t.payment_id)
            )
        ours = refunded.get(t.payment_id, 0)
        if ours != t.refunded:
            kind = "refund_not_at_gateway" if ours > t.refunded else "refund_not_recorded"
            found.append(
                Mismatch(
                    kind,
                    mine.order_id,
                    f"{gateway.name}: {t.payment_id} refunded {format_money(t.refunded, t.currency)};"
                    f" orderflow: refunded {format_money(ours, t.currency)}",
                    t.payment_id,
                )
            )
    for payment_id, mine in captures.items():
        seen = theirs.get(payment_id)
        if seen is None or seen.captured <= 0:
            state = "no such payment" if seen is None else f"{seen.status}, nothing captured"
            found.append(
                Mismatch(
                    "capture_not_at_gateway",
                    mine.order_id,
                    f"orderflow: {payment_id} captured"
                    f" {format_money(mine.amount, mine.currency)}; {gateway.name}: {state}",
                    payment_id,
                )
            )
    return found


def _our_books(
    engine: Engine, provider: str, theirs: list[str], since: datetime
) -> tuple[dict[str, Payment], dict[str, int]]:
    """Our side of a gateway comparison: its captures by payment id, refunded sums per capture.

    The rows are the provider's successful payments made since `since` or about a payment the
    gateway listed. A refund that names no payment counts against its order's only capture,
    else under `order:<id>` (no capture of the gateway's matches it).
    """
    with Session(engine) as session:
        rows = session.exec(
            select(Payment).where(
                Payment.provider == provider,
                Payment.status == PaymentStatus.SUCCEEDED,
                or_(
                    col(Payment.created_at) >= since,
                    col(Payment.payment_id).in_(theirs),
                    col(Payment.refund_of).in_(theirs),
                ),
            )
        ).all()
    captures = {p.payment_id: p for p in rows if p.kind == PaymentKind.CAPTURE}
    by_order: dict[str, list[str]] = defaultdict(list)
    for p in captures.values():
        by_order[p.order_id].append(p.payment_id)
    refunded: dict[str, int] = defaultdict(int)  # per captured payment id
    for p in rows:
        if p.kind == PaymentKind.REFUND:
            of = p.refund_of or (by_order[p.order_id][0] if len(by_order[p.order_id]) == 1 else "")
            refunded[of or f"order:{p.order_id}"] += p.amount
    return captures, refunded


def _unapplied_by_order(
    events: list[WebhookEvent] | Any, recorded: set[tuple[str, str]]
) -> dict[str, int]:
    """Money the gateways took that no order accepted (refunding it is right), per order."""
    received_types = _types(EventKind.PAYMENT_RECEIVED)
    amounts: dict[tuple[str, str], tuple[str, int]] = {}
    for e in events:
        key = (e.provider, e.payment_id)
        if (
            e.type in received_types
            and e.status == WebhookEventStatus.UNAPPLIED
            and key not in recorded
        ):
            amounts[key] = (e.order_id, e.amount)
    totals: dict[str, int] = defaultdict(int)
    for order_id, amount in amounts.values():
        totals[order_id] += amount
    return totals


def _order_mismatches(order: Order, captured: int, refunded: int, unapplied: int) -> list[Mismatch]:
    money = (
        f"captured {format_money(captured, order.currency)},"
        f" refunded {format_money(refunded, order.currency)}"
    )
    found = []
    if order.status in ENDED_UNPAID_STATUSES and captured - refunded > 0:
        found.append(
            Mismatch("paid_order_cancelled", order.id, f"order is {order.status} but {money}")
        )
    if order.status in PAID_STATUSES and captured == 0:
        found.append(
            Mismatch("paid_without_capture", order.id, f"order is {order.status}, no capture")
        )
    elif order.status in PAID_STATUSES and captured != order.total:
        found.append(
            Mismatch(
                "amount_mismatch",
                order.id,
                f"order total {format_money(order.total, order.currency)}, {money}",
            )
        )
    if order.status == OrderStatus.RETURNED and captured - refunded > 0:
        found.append(Mismatch("returned_not_refunded", order.id, f"order is RETURNED but {money}"))
    if order.status == OrderStatus.REFUND_FAILED:
        found.append(
            Mismatch(
                "refund_failed",
                order.id,
                f"the refund was declined every time, {money}: repay the customer by hand",
            )
        )
    if refunded - captured - unapplied > 0:
        found.append(
            Mismatch(
                "over_refunded",
                order.id,
                f"{money}, unapplied {format_money(unapplied, order.currency)}",
            )
        )
    return found


def _event_mismatches(
    events: list[WebhookEvent] | Any,
    recorded: set[tuple[str, str]],
    now: datetime,
    stale: timedelta,
) -> list[Mismatch]:
    received_types, refund_types = _types(EventKind.PAYMENT_RECEIVED), _types(EventKind.REFUND)
    refunded_payments = {
        (e.provider, e.payment_id)
        for e in events
        if e.type in refund_types and e.status == WebhookEventStatus.APPLIED
    }
    found = []
    seen: set[tuple[str, str]] = set()
    for e in events:
        key = (e.provider, e.payment_id or e.event_id)
        if e.status == WebhookEventStatus.RECEIVED and now - _aware(e.received_at) > stale:
            found.append(
                Mismatch(
                    "event_not_applied",
                    e.order_id,
                    f"{e.provider} event {e.event_id} ({e.type}) still RECEIVED since"
                    f" {_aware(e.received_at).isoformat()}: {e.detail or 'never applied'}",
                    e.payment_id,
                )
            )
            continue
        if e.type not in received_types or key in seen:
            continue
        money = f"{e.provider} payment {e.payment_id} of {format_money(e.amount, e.currency)} (event {e.event_id})"
        if (
            e.status in (WebhookEventStatus.UNAPPLIED, WebhookEventStatus.REJECTED)
            and key not in refunded_payments
        ):
            seen.add(key)
            found.append(
                Mismatch("payment_not_applied", e.order_id, f"{money}: {e.detail}", e.payment_id)
            )
        elif e.status == WebhookEventStatus.APPLIED and key not in recorded:
            if now - _aware(e.received_at) > RECORD_GRACE:
                seen.add(key)
                found.append(
                    Mismatch(
                        "capture_not_recorded",
                        e.order_id,
                        f"{money} was accepted but is not in the payments table",
                        e.payment_id,
                    )
                )
    return found


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def enqueue_reconciliation(
    queue: Any,
    *,
    window_hours: float = 24.0,
    job_id: str = "",
    stale_minutes: float = APPLY_GRACE_MINUTES,
) -> str:
    """Ask the webhook worker for a reconciliation (a producer's or Queue's `add`); returns the job id."""
    opts = {"jobId": job_id} if job_id else {}
    added = await queue.add(
        WebhookJob.RECONCILIATION,
        {"window_hours": window_hours, "stale_minutes": stale_minutes},
        opts,
    )
    return str(getattr(added, "id", added))
