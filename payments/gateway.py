"""The payment gateway behind one interface; the simulated one is the local default."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session

from orderflow.contracts.payment import GatewayRequest, GatewayResponse, PaymentKind
from orderflow.db import SimulatedGatewayAccount


class PaymentGateway(Protocol):
    """Capture and refund; a decline is an answer, a network failure an exception."""

    def capture(self, request: GatewayRequest) -> GatewayResponse:
        """Take the order's money."""
        ...

    def refund(self, request: GatewayRequest) -> GatewayResponse:
        """Give the order's money back."""
        ...


class SimulatedGateway:
    """A stand-in gateway with configurable failures, kept in its own table so restarts keep them.

    Like a real gateway's test mode: `fail_captures` declines that many capture calls per order
    before accepting, `decline_all` declines every capture; `set_rule` overrides both per order.
    """

    def __init__(
        self, engine: Engine, *, fail_captures: int = 0, decline_all: bool = False
    ) -> None:
        self.engine = engine
        self.fail_captures = fail_captures
        self.decline_all = decline_all

    def set_rule(self, order_id: str, *, fail_captures: int = 0, decline_all: bool = False) -> None:
        """Script one order's captures (used by the demo and tests)."""
        with Session(self.engine) as session:
            account = session.get(SimulatedGatewayAccount, order_id) or SimulatedGatewayAccount(
                order_id=order_id
            )
            account.fail_captures = fail_captures
            account.decline_all = decline_all
            session.add(account)
            session.commit()

    def capture(self, request: GatewayRequest) -> GatewayResponse:
        """Decline as scripted, else succeed with a payment id derived from the idempotency key."""
        with Session(self.engine) as session:
            account = session.get(SimulatedGatewayAccount, request.order_id)
            if account is None:
                account = SimulatedGatewayAccount(
                    order_id=request.order_id,
                    fail_captures=self.fail_captures,
                    decline_all=self.decline_all,
                )
            account.captures_seen += 1
            declined = account.decline_all or account.captures_seen <= account.fail_captures
            session.add(account)
            session.commit()
            seen = account.captures_seen
        if declined:
            return GatewayResponse(
                succeeded=False, detail=f"card declined (simulated, call {seen})"
            )
        return GatewayResponse(
            succeeded=True, payment_id=f"sim_{request.idempotency_key}", detail="captured"
        )

    def refund(self, request: GatewayRequest) -> GatewayResponse:
        """Refunds always succeed in the simulation."""
        with Session(self.engine) as session:
            account = session.get(
                SimulatedGatewayAccount, request.order_id
            ) or SimulatedGatewayAccount(order_id=request.order_id)
            account.refunds_seen += 1
            session.add(account)
            session.commit()
        return GatewayResponse(
            succeeded=True, payment_id=f"sim_{request.idempotency_key}", detail="refunded"
        )


def call(gateway: PaymentGateway, request: GatewayRequest) -> GatewayResponse:
    """Dispatch a request to capture or refund."""
    if request.kind is PaymentKind.REFUND:
        return gateway.refund(request)
    return gateway.capture(request)
