"""The payment gateway behind one interface: a registered provider's, or the simulated default.

Each real gateway is declared by its provider module (payments/providers/<name>.py: its
factory and key patterns); `make_gateway` and `without_keys` read the registry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session

from orderflow.contracts.payment import (
    Checkout,
    CheckoutRequest,
    GatewayName,
    GatewayPayment,
    GatewayRefund,
    GatewayRequest,
    GatewayResponse,
    HoldState,
    HoldStatus,
    PaymentKind,
)
from orderflow.db import SimulatedGatewayAccount
from orderflow.errors import OrderflowError
from orderflow.settings import Settings
from payments.providers.base import build_gateway, key_pattern


def without_keys(reason: str) -> str:
    """`reason` with anything shaped like an API key blanked: gateway errors reach logs and jobs.

    Args:
        reason: a gateway's error text, which may echo a key.

    Returns:
        The text with every registered provider's key patterns replaced by `[key]`.
    """
    return key_pattern().sub("[key]", reason)


class GatewayUnavailableError(OrderflowError):
    """The gateway could not answer (network, timeout, rate limit, its 5xx): retry the call.

    The same idempotency key goes with the retry, so a call that did land is not repeated.
    """

    def __init__(self, provider: str, order_id: str, what: str, reason: str) -> None:
        super().__init__(
            f"{provider} unavailable for {what} of order {order_id}: {without_keys(reason)}"
        )
        self.provider = provider
        self.order_id = order_id


class GatewayConfigError(OrderflowError):
    """The gateway refused us, not the card (bad API key, missing permission): retrying won't help."""

    def __init__(self, provider: str, order_id: str, reason: str) -> None:
        super().__init__(
            f"{provider} refused the request for order {order_id}: {without_keys(reason)}"
        )
        self.provider = provider
        self.order_id = order_id


class PaymentGateway(Protocol):
    """Capture, refund, fetch and list; a decline is an answer, a network failure an exception.

    Every call that moves money sends `request.idempotency_key`, so a retried call is one charge.
    Every method may raise GatewayUnavailableError (the gateway could not answer: retry with
    the same key) or GatewayConfigError (it refused our credentials: retrying won't help).
    """

    name: str
    """The provider, as in the payments table and webhook events (its registry name)."""

    def capture(self, request: GatewayRequest) -> GatewayResponse:
        """Take the order's money.

        Args:
            request: the order, amount (minor units), currency, attempt and idempotency key.

        Returns:
            The answer: `succeeded` with the gateway's payment id, or declined with its reason.

        Raises:
            GatewayUnavailableError: no answer (network, timeout, rate limit, its 5xx).
            GatewayConfigError: the gateway refused our keys or permissions.
        """
        ...

    def refund(self, request: GatewayRequest) -> GatewayResponse:
        """Give the order's money back.

        Args:
            request: the amount to give back and `payment_id`, the captured payment it refunds.

        Returns:
            The answer: `succeeded` with the refund's id, or refused with the gateway's reason.

        Raises:
            GatewayUnavailableError: no answer; retry with the same key.
            GatewayConfigError: the gateway refused our keys or permissions.
        """
        ...

    def release(self, request: GatewayRequest) -> GatewayResponse:
        """Let an uncaptured authorisation go.

        Args:
            request: `payment_id` names the authorisation (hold).

        Returns:
            Succeeded when nothing is held any more; declined when it was captured (refund it
            instead).

        Raises:
            GatewayUnavailableError: no answer; retry with the same key.
            GatewayConfigError: the gateway refused our keys or permissions.
        """
        ...

    def hold_status(self, request: GatewayRequest) -> HoldStatus:
        """What became of an authorisation.

        Args:
            request: `payment_id` names the authorisation.

        Returns:
            Held, released, captured (with the amounts taken and refunded) or unknown.

        Raises:
            GatewayUnavailableError: no answer.
            GatewayConfigError: the gateway refused our keys or permissions.
        """
        ...

    def fetch(self, payment_id: str) -> GatewayPayment | None:
        """One payment as the gateway has it.

        Args:
            payment_id: the gateway's id of the payment.

        Returns:
            The payment, or None when the gateway does not know the id.

        Raises:
            GatewayUnavailableError: no answer.
            GatewayConfigError: the gateway refused our keys or permissions.
        """
        ...

    def list_payments(self, since: datetime) -> list[GatewayPayment]:
        """Every payment the gateway made since a time (the reconciliation's other side).

        Args:
            since: the earliest creation time listed.

        Returns:
            The payments, each with our order id where the gateway carries it.

        Raises:
            GatewayUnavailableError: no answer.
            GatewayConfigError: the gateway refused our keys or permissions.
        """
        ...

    def list_refunds(self, payment_id: str) -> list[GatewayRefund]:
        """Every refund of one payment, each by its own id.

        Args:
            payment_id: the gateway's id of the refunded payment.

        Returns:
            The refunds, newest first.

        Raises:
            GatewayUnavailableError: no answer.
            GatewayConfigError: the gateway refused our keys or permissions.
        """
        ...

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Open the checkout the storefront completes, carrying the order id.

        Args:
            request: the order, its total and currency, and how to capture.

        Returns:
            What the storefront needs (the gateway's id, status, client secret).

        Raises:
            GatewayUnavailableError: no answer.
            GatewayConfigError: the gateway refused our keys or permissions.
        """
        ...


class SimulatedGateway:
    """A stand-in gateway with configurable failures, kept in its own table so restarts keep them.

    Like a real gateway's test mode: `fail_captures` declines that many capture calls per order
    before accepting, `decline_all` declines every capture; `set_rule` overrides both per order.
    """

    name = GatewayName.SIMULATED.value

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

    def release(self, request: GatewayRequest) -> GatewayResponse:
        """The simulation holds no money: there is nothing to let go."""
        return GatewayResponse(
            succeeded=True, payment_id=request.payment_id, detail="released (simulated)"
        )

    def hold_status(self, request: GatewayRequest) -> HoldStatus:
        """The simulation holds no money: every hold is as good as released."""
        return HoldStatus(request.payment_id, HoldState.RELEASED, detail="simulated: nothing held")

    def fetch(self, payment_id: str) -> GatewayPayment | None:
        """The simulation keeps no payments of its own: our table is the only record."""
        return None

    def list_payments(self, since: datetime) -> list[GatewayPayment]:
        """Nothing to reconcile against (see fetch)."""
        return []

    def list_refunds(self, payment_id: str) -> list[GatewayRefund]:
        """Nothing to list (see fetch)."""
        return []

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """A checkout id that a simulated payment (`orderflow orders pay`) can name."""
        return Checkout(
            provider=self.name,
            payment_id=f"sim_checkout_{request.order_id}",
            status="requires_payment_method",
            amount=request.amount,
            currency=request.currency,
        )


def make_gateway(settings: Settings, engine: Engine) -> PaymentGateway:
    """The gateway `ORDERFLOW_GATEWAY` names, with its keys from the settings.

    Args:
        settings: `gateway` names it; the provider's factory reads its keys from the rest.
        engine: the database the simulated gateway keeps its scripted failures in.

    Returns:
        The simulated gateway, or the registered provider's.

    Raises:
        UnknownProviderError: no provider of that name is registered.
        NoGatewayError: the provider of that name declares webhooks only.
    """
    chosen = GatewayName(settings.gateway)
    if chosen is GatewayName.SIMULATED:
        return SimulatedGateway(
            engine,
            fail_captures=settings.gateway_fail_captures,
            decline_all=settings.gateway_decline_all,
        )
    return build_gateway(chosen.value, settings)


def call(gateway: PaymentGateway, request: GatewayRequest) -> GatewayResponse:
    """Dispatch a request to capture, refund or release."""
    if request.kind is PaymentKind.REFUND:
        return gateway.refund(request)
    if request.kind is PaymentKind.RELEASE:
        return gateway.release(request)
    return gateway.capture(request)
