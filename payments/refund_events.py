"""Refund events into the payments table: each refund once, by its own id; a failed one flagged.

Run in a thread: SQLAlchemy sessions and the gateway's calls block.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from orderflow.contracts.order import OrderStatus
from orderflow.contracts.payment import PaymentKind, PaymentStatus, WebhookEventStatus
from orderflow.db import Order, Payment
from orderflow.money import format_money
from payments.events import GatewayEvent
from payments.gateway import GatewayConfigError, GatewayUnavailableError, PaymentGateway
from payments.webhook_errors import WebhookEventError, minor_amount

log = logging.getLogger("orderflow.webhooks")

REFUND_GONE = ("failed", "canceled")  # a listed refund in these states gave nothing back


def record_refund(
    engine: Engine, gateway: PaymentGateway | None, event: GatewayEvent
) -> tuple[WebhookEventStatus, str]:
    """Record the refund (or the refunds listed) the event reports, none of them twice.

    Args:
        engine: the database with the payments table.
        gateway: asked for the payment's refunds when the event gives only a running total
            (None: the total is counted instead).
        event: a REFUND event.

    Returns:
        APPLIED and what was recorded.

    Raises:
        WebhookEventError: the amount is impossible or no order is known.
    """
    amount = minor_amount(event)
    refund_id = event.refund_id or f"{event.payment_id}-refund-{event.event_id}"
    with Session(engine) as session:
        order_id = event.order_id
        if not order_id:
            raise WebhookEventError(
                event, f"refund {refund_id} of payment {event.payment_id}: no order known"
            )
        listed = _refunds_listed(gateway, event)
        if listed is not None:
            return _record_listed(session, event, order_id, *listed)
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


def _refunds_listed(
    gateway: PaymentGateway | None, event: GatewayEvent
) -> tuple[list[tuple[str, int]], int] | None:
    """(id, amount) of each refund of the payment that gave money back, and their total.

    From the event's own list, or for a running total without one, from the gateway's list:
    a running total alone cannot say which refund it adds, so recording it under an id of
    its own counted a refund twice once its real row came in. None: neither is known.
    """
    given = [r for r in event.refunds_listed if r.get("status") not in REFUND_GONE]
    listed = [(str(r["id"]), r["amount"]) for r in given if _is_amount(r.get("amount"))]
    total = event.refunded_total
    if not event.refunds_listed and event.refund_cumulative and gateway is not None:
        try:
            found = gateway.list_refunds(event.payment_id)
        except (GatewayUnavailableError, GatewayConfigError) as err:
            log.warning("%s; counting the running total instead", err)
            return None
        listed = [(r.refund_id, r.amount) for r in found if r.status not in REFUND_GONE]
        total = sum(amount for _, amount in listed)
    if not listed:
        return None
    return listed, total if _is_amount(total) else sum(amount for _, amount in listed)


def _record_listed(
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


def record_refund_failure(engine: Engine, event: GatewayEvent) -> str:
    """Mark the refund's row FAILED and its order REFUND_FAILED: the money is owed again.

    Args:
        engine: the database with the payments and order tables.
        event: a REFUND_FAILED event.

    Returns:
        What an operator has to do, naming the refund, the payment and the order.

    Raises:
        WebhookEventError: the amount is impossible, or no refund id or order is known.
    """
    amount = minor_amount(event)
    if not event.refund_id:
        raise WebhookEventError(
            event, f"a failed refund of payment {event.payment_id} with no refund id"
        )
    reason = event.reason or f"{event.type} from {event.provider}"
    with Session(engine) as session:
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


def _is_amount(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
