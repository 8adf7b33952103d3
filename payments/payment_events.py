"""Payment events to the order: a payment or authorisation through its `pay` update, a failure.

The order workflow decides; these only report, and say how the event is to be recorded.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

from bridge.errors import RetryLater
from orderflow.contracts.order import PAID_STATUSES, PaymentAck, PaymentFailed, PaymentReceived
from orderflow.contracts.payment import PaymentKind, WebhookEventStatus
from orderflow.db import Payment
from orderflow.errors import OrderClosedError, UnknownOrderError
from orderflow.money import format_money
from payments.events import EventKind, GatewayEvent, risky
from payments.gateway import PaymentGateway
from payments.webhook_errors import RiskUnknownError, WebhookEventError, minor_amount, unapplied

log = logging.getLogger("orderflow.webhooks")

UPDATE_RECHECK_MS = 2000  # how soon a job whose update is still running asks again


class Orders(Protocol):
    """The part of OrderClient the worker uses."""

    async def payment_received(
        self,
        order_id: str,
        payment: PaymentReceived,
        *,
        update_id: str = "",
        wait_seconds: float | None = None,
    ) -> PaymentAck:
        """Report a payment; the answer says whether the order took it.

        Args:
            order_id: the order the event names.
            payment: the captured payment.
            update_id: the same id again waits for that update instead of sending another.
            wait_seconds: how long to wait for the answer at most.

        Returns:
            Whether the order accepted the payment, and why not.

        Raises:
            WorkflowUpdateRPCTimeoutOrCancelledError: no answer within `wait_seconds`.
            UnknownOrderError: no such order (yet).
        """
        ...

    async def payment_failed(self, order_id: str, failure: PaymentFailed) -> None:
        """Report a failed capture.

        Raises:
            UnknownOrderError: no such order (yet).
            OrderClosedError: the order has ended.
        """
        ...


@runtime_checkable
class RiskReader(Protocol):
    """A gateway that can say how risky one of its charges is (StripeGateway)."""

    def charge_risk(self, charge_id: str) -> str:
        """Radar's risk level of the charge ("" if none); raises if Stripe cannot say."""
        ...


@dataclass(frozen=True)
class PaymentEvents:
    """The handlers of the payment kinds, each `(event, final) -> (status, detail)`.

    With final=False an unknown order raises UnknownOrderError (the caller retries); with
    final=True the event is rejected for good.
    """

    orders: Orders
    engine: Engine
    gateway: PaymentGateway | None  # reads the Radar risk a payment_intent.* event only names
    update_wait_seconds: float  # how long one job waits for the pay update's answer

    async def received(self, event: GatewayEvent, final: bool) -> tuple[WebhookEventStatus, str]:
        """Report a payment (or an authorisation the order captures) through the pay update.

        Raises:
            RetryLater: the update is still running (a refused hold being released).
            WebhookEventError: the order is unknown (final), or refused the money (UNAPPLIED).
            RiskUnknownError: the charge's risk could not be read (retried as an outage).
        """
        amount = minor_amount(event)
        held = event.kind == EventKind.PAYMENT_AUTHORISED
        event.flagged = event.flagged or await self._radar_flag(event)
        payment = PaymentReceived(
            payment_id=event.payment_id,
            amount=amount,
            provider=event.provider,
            flagged=event.flagged,
            currency=event.currency,
            authorised_only=held,
        )
        what = "authorisation" if held else "payment"
        money = f"{what} {event.payment_id} of {format_money(amount, event.currency)}"
        # a refused authorisation is released by the order: nothing was taken to refund
        todo = "" if held else "; refund it or reopen"
        try:
            ack = await self.orders.payment_received(
                event.order_id,
                payment,
                update_id=f"pay-{event.job_id}",
                wait_seconds=self.update_wait_seconds,
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError as err:
            raise RetryLater(
                UPDATE_RECHECK_MS,
                f"{event.provider} event {event.event_id}: order {event.order_id} is still"
                f" answering {money} (a refused hold being released); asking again",
            ) from err
        except UnknownOrderError as err:
            if not final:
                raise
            raise WebhookEventError(event, f"{money} for an unknown order ({err})") from err
        except OrderClosedError as err:
            if kept := await asyncio.to_thread(self._kept, event):
                return WebhookEventStatus.DUPLICATE, f"{money}: {kept}"
            closed = "; release it at the gateway" if held else todo  # no order left to do it
            raise unapplied(event, f"{money} not applied: {err}{closed}") from err
        if not ack.accepted:
            # a closed order refuses everything, its own payment too: only one it does not
            # hold is money to give back
            if kept := await asyncio.to_thread(self._kept, event):
                return WebhookEventStatus.DUPLICATE, f"{money}: {kept}"
            raise unapplied(event, f"{money} not applied: {ack.reason}{todo}")
        detail = f"{money} accepted, order {ack.status} {ack.reason}".strip()
        if event.flagged and ack.status in PAID_STATUSES:
            # the review decision was taken without the flag: only a person can act on it now
            detail = (
                f"{money} flagged as risky after order {event.order_id} was {ack.status}:"
                " review it before it ships (or refund it if it has)"
            )
            log.error("%s event %s: %s", event.provider, event.event_id, detail)
        return WebhookEventStatus.APPLIED, detail

    async def failed(self, event: GatewayEvent, final: bool) -> tuple[WebhookEventStatus, str]:
        """Report a failed payment; an order that already ended needs no failure (IGNORED).

        Raises:
            WebhookEventError: the order is unknown (final).
        """
        failure = PaymentFailed(
            payment_id=event.payment_id,
            reason=event.reason or f"{event.type} from {event.provider}",
            provider=event.provider,
            attempt_id=event.attempt_id,
        )
        try:
            await self.orders.payment_failed(event.order_id, failure)
        except UnknownOrderError as err:
            if not final:
                raise
            raise WebhookEventError(event, f"payment failure for an unknown order ({err})") from err
        except OrderClosedError as err:
            return WebhookEventStatus.IGNORED, f"order already ended, failure not needed: {err}"
        return WebhookEventStatus.APPLIED, f"payment {event.payment_id} failed: {failure.reason}"

    async def _radar_flag(self, event: GatewayEvent) -> bool:
        """Whether Radar flags the charge the event names but does not describe.

        Stripe's payment_intent.* events name a charge without its risk; a charge whose risk
        cannot be read holds the payment back.
        """
        if not event.risk_charge:
            return False
        if not isinstance(self.gateway, RiskReader):
            log.warning(
                "%s event %s: no Stripe API configured to read the risk of charge %s: order %s"
                " reviews payment %s",
                event.provider, event.event_id, event.risk_charge, event.order_id,
                event.payment_id,
            )  # fmt: skip
            return True
        try:
            level = await asyncio.to_thread(self.gateway.charge_risk, event.risk_charge)
        except Exception as err:
            raise RiskUnknownError(event, err) from err
        return risky(level)

    def _kept(self, event: GatewayEvent) -> str:
        """How the order already holds this payment ("" if it does not): its capture row."""
        with Session(self.engine) as session:
            row = session.exec(
                select(Payment).where(
                    Payment.provider == event.provider,
                    Payment.payment_id == event.payment_id,
                    Payment.order_id == event.order_id,
                    Payment.kind == PaymentKind.CAPTURE,
                )
            ).first()
        if row is None:
            return ""
        return (
            f"order {event.order_id} already holds it (payments row {row.id},"
            f" {row.status} {format_money(row.amount, row.currency)}): a late duplicate,"
            " nothing to do"
        )
