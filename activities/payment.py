"""Payment side effects: one gateway call per attempt, recorded in the payments table."""

from __future__ import annotations

from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio import activity

from orderflow.contracts.payment import GatewayRequest, GatewayResponse, PaymentStatus
from orderflow.db import Payment
from payments.gateway import PaymentGateway, call


class PaymentActivities:
    """Calls the gateway; a decline comes back as an answer, a network error is retried."""

    def __init__(
        self, engine: Engine, gateway: PaymentGateway, provider: str = "simulated"
    ) -> None:
        self.engine = engine
        self.gateway = gateway
        self.provider = provider

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
        response = call(self.gateway, request)
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
                )
            )
            session.commit()
        return response
