"""The `webhookevent` table: each gateway event recorded once, and how it was handled.

Run in a thread: SQLAlchemy sessions block.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from orderflow.contracts.payment import WebhookEventStatus
from orderflow.db import Payment, WebhookEvent
from payments.events import GatewayEvent, amount_problem

# an event recorded with one of these was handled: a redelivery is a no-op
DONE_STATUSES = (
    WebhookEventStatus.APPLIED,
    WebhookEventStatus.IGNORED,
    WebhookEventStatus.DUPLICATE,
)


def record_event(engine: Engine, event: GatewayEvent) -> WebhookEvent:
    """The event's row: written now, or the one an earlier delivery of it wrote."""
    # an impossible amount is recorded as 0 (the check that follows rejects the event with
    # it): the row must be written whatever was sent
    minor = 0 if amount_problem(event.amount_minor) else event.amount_minor
    with Session(engine) as session:
        found = _find(session, event)
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
            found = _find(session, event)
            assert found is not None
            return found
        session.refresh(row)
        return row


def finish_event(engine: Engine, event: GatewayEvent, status: str, detail: str) -> None:
    """Mark the event's row with how it was handled."""
    with Session(engine) as session:
        row = _find(session, event)
        if row is None:
            return
        row.status, row.detail = status, detail[:2000]
        row.order_id = row.order_id or event.order_id
        row.processed_at = datetime.now(UTC)
        session.add(row)
        session.commit()


def order_of_event(engine: Engine, event: GatewayEvent) -> str:
    """The order a gateway payment id belongs to, from the payments or earlier events."""
    with Session(engine) as session:
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


def _find(session: Session, event: GatewayEvent) -> WebhookEvent | None:
    return session.exec(
        select(WebhookEvent).where(
            WebhookEvent.provider == event.provider, WebhookEvent.event_id == event.event_id
        )
    ).first()
