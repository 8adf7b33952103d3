"""Reconciliation sees every place money can go missing: returns, failed refunds, stuck events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from orderflow.contracts.order import OrderStatus
from orderflow.contracts.payment import PaymentKind, PaymentStatus, WebhookEventStatus
from orderflow.db import Order, Payment, WebhookEvent
from payments.reconciliation import reconcile


def _order(session: Session, status: OrderStatus, total: int = 50_000) -> str:
    order_id = f"r-{uuid.uuid4().hex[:10]}"
    session.add(Order(id=order_id, customer_id="c", email="c@example.com", status=status,
                      total=total, currency="INR"))  # fmt: skip
    return order_id


def _pay(session: Session, order_id: str, kind: PaymentKind, amount: int) -> None:
    session.add(Payment(order_id=order_id, provider="stripe", kind=kind, amount=amount,
                        payment_id=f"{kind}-{uuid.uuid4().hex[:8]}", currency="INR",
                        status=PaymentStatus.SUCCEEDED))  # fmt: skip


def _kinds(report: dict[str, object], order_id: str) -> set[str]:
    mismatches = report["mismatches"]
    assert isinstance(mismatches, list)
    return {m["kind"] for m in mismatches if m["order_id"] == order_id}


def test_a_return_not_refunded_and_a_failed_refund_are_reported(engine: Engine) -> None:
    with Session(engine) as session:
        returned = _order(session, OrderStatus.RETURNED)
        _pay(session, returned, PaymentKind.CAPTURE, 50_000)
        refunded_return = _order(session, OrderStatus.RETURNED)
        _pay(session, refunded_return, PaymentKind.CAPTURE, 50_000)
        _pay(session, refunded_return, PaymentKind.REFUND, 50_000)
        owed = _order(session, OrderStatus.REFUND_FAILED)
        _pay(session, owed, PaymentKind.CAPTURE, 50_000)
        session.commit()
    report = reconcile(engine, window_hours=1)
    assert _kinds(report, returned) == {"returned_not_refunded"}
    assert _kinds(report, refunded_return) == set()
    assert "refund_failed" in _kinds(report, owed)


def test_an_event_left_received_past_the_grace_is_reported(engine: Engine) -> None:
    now = datetime.now(UTC)
    stuck, fresh = (f"evt_{uuid.uuid4().hex[:10]}" for _ in range(2))
    with Session(engine) as session:
        order_id = _order(session, OrderStatus.PENDING_PAYMENT)
        for event_id, age in ((stuck, timedelta(minutes=45)), (fresh, timedelta(minutes=1))):
            session.add(WebhookEvent(provider="stripe", event_id=event_id, type="payment_intent.succeeded",
                                     order_id=order_id, payment_id=f"pi_{event_id}", amount=50_000,
                                     currency="INR", status=WebhookEventStatus.RECEIVED,
                                     received_at=now - age))  # fmt: skip
        session.commit()
    report = reconcile(engine, window_hours=1, now=now)
    mine = [m for m in report["mismatches"] if m["order_id"] == order_id]
    assert [m["kind"] for m in mine] == ["event_not_applied"]
    assert stuck in mine[0]["detail"] and "RECEIVED" in mine[0]["detail"]
