"""Payment side effects: one gateway call per attempt, recorded in the payments table."""

from __future__ import annotations

from sqlalchemy import or_
from sqlalchemy.engine import Engine
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
        """Capture or refund once per idempotency key and record the outcome."""
        key = request.idempotency_key
        with Session(self.engine) as session:
            done = session.exec(
                select(Payment).where(
                    Payment.provider == self.provider,
                    or_(col(Payment.payment_id) == key, col(Payment.detail) == key),
                )
            ).first()
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
        with Session(self.engine) as session:
            # a success is filed under the gateway's payment id, a decline under our key
            session.add(
                Payment(
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
            )
            session.commit()
        return response

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
