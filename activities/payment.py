"""Payment side effects: one gateway call per attempt, recorded in the payments table."""

from __future__ import annotations

from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from orderflow.contracts.payment import (
    GatewayRequest,
    GatewayResponse,
    HoldStatus,
    PaymentKind,
    PaymentStatus,
)
from orderflow.db import Payment
from payments.gateway import GatewayConfigError, PaymentGateway, call


class PaymentActivities:
    """Calls the gateway; a decline comes back as an answer, a network error is retried.

    GatewayUnavailableError (timeout, rate limit, 5xx) propagates, so Temporal retries the
    activity with the same request and idempotency key; a refusal of our setup (bad key)
    fails the attempt without those retries.
    """

    def __init__(self, engine: Engine, gateway: PaymentGateway, provider: str = "") -> None:
        self.engine = engine
        self.gateway = gateway
        self.provider = provider or gateway.name

    @activity.defn
    def call_gateway(self, request: GatewayRequest) -> GatewayResponse:
        """Capture or refund once per idempotency key and record the outcome.

        A refund also looks for an earlier refund of the same payment and amount before it
        calls the gateway: one the webhook worker recorded, or (inside the gateway) one an
        earlier attempt made whose answer was lost. Each attempt has its own key, so only
        looking first keeps the customer from being paid twice.
        """
        key = request.idempotency_key
        with Session(self.engine) as session:
            done = session.exec(
                select(Payment).where(
                    Payment.provider == self.provider,
                    or_(col(Payment.payment_id) == key, col(Payment.detail) == key),
                )
            ).first()
            if done is None and request.kind is PaymentKind.REFUND:
                done = self._earlier_refund(session, request)
            if done is not None:
                ok = done.status == PaymentStatus.SUCCEEDED
                return GatewayResponse(
                    succeeded=ok,
                    payment_id=done.payment_id if ok else "",
                    detail="replayed",
                    provider=self.provider,
                )
        try:
            response = call(self.gateway, request)
        except GatewayConfigError as err:
            raise ApplicationError(str(err), type="GatewayConfigError", non_retryable=True) from err
        response.provider = self.provider
        # a success is filed under the gateway's payment id, a decline under our key
        row = Payment(
            order_id=request.order_id,
            provider=self.provider,
            payment_id=response.payment_id if response.succeeded else key,
            kind=request.kind.value,
            amount=request.amount,
            currency=request.currency,
            status=PaymentStatus.SUCCEEDED if response.succeeded else PaymentStatus.FAILED,
            detail=key if response.succeeded else response.detail,
            refund_of=request.payment_id if request.kind is PaymentKind.REFUND else "",
        )
        with Session(self.engine) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                first = self._same_refund(session, row)
                if first is None:
                    raise
                if first.status != PaymentStatus.SUCCEEDED:  # its refund.failed came first
                    return GatewayResponse(
                        succeeded=False,
                        detail=f"refund {first.payment_id} failed: {first.detail}",
                        provider=self.provider,
                    )
                activity.logger.info(
                    "refund %s of order %s was recorded first by the webhook worker",
                    first.payment_id,
                    request.order_id,
                )
        return response

    def _earlier_refund(self, session: Session, request: GatewayRequest) -> Payment | None:
        """A refund of this payment and amount already recorded (by any attempt or a webhook)."""
        of = (
            col(Payment.refund_of) == request.payment_id
            if request.payment_id
            else col(Payment.order_id) == request.order_id
        )
        return session.exec(
            select(Payment)
            .where(
                Payment.provider == self.provider,
                Payment.kind == PaymentKind.REFUND,
                Payment.status == PaymentStatus.SUCCEEDED,
                Payment.amount == request.amount,
                of,
            )
            .order_by(col(Payment.id))
        ).first()

    def _same_refund(self, session: Session, row: Payment) -> Payment | None:
        """The row `row` conflicts with, if it is the same refund recorded first, else None."""
        if row.kind != PaymentKind.REFUND:
            return None
        first = session.exec(
            select(Payment).where(
                Payment.provider == row.provider, Payment.payment_id == row.payment_id
            )
        ).first()
        if first is None or first.kind != PaymentKind.REFUND:
            return None
        if row.refund_of and first.refund_of and row.refund_of != first.refund_of:
            return None
        return first

    @activity.defn
    def release(self, request: GatewayRequest) -> GatewayResponse:
        """Let an uncaptured authorisation go; no money moved, so no payment row is written."""
        try:
            response = self.gateway.release(request)
        except GatewayConfigError as err:
            raise ApplicationError(str(err), type="GatewayConfigError", non_retryable=True) from err
        response.provider = self.provider
        return response

    @activity.defn
    def hold_status(self, request: GatewayRequest) -> HoldStatus:
        """What became of an authorisation at the gateway (asked when it was not released)."""
        try:
            return self.gateway.hold_status(request)
        except GatewayConfigError as err:
            raise ApplicationError(str(err), type="GatewayConfigError", non_retryable=True) from err
