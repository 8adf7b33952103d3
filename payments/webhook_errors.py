"""How a webhook job fails: its errors, the check of an event's fields, and what is an outage."""

from __future__ import annotations

from bullmq import UnrecoverableError
from sqlalchemy.exc import InterfaceError, OperationalError
from temporalio.client import (
    RPCTimeoutOrCancelledError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from orderflow.contracts.payment import WebhookEventStatus
from orderflow.errors import OrderflowError
from payments import providers
from payments.events import (
    MONEY_KINDS,
    EventKind,
    GatewayEvent,
    amount_problem,
    currency_problem,
)

# events about one payment of an order: they must name the order
PAYMENT_KINDS = (EventKind.PAYMENT_RECEIVED, EventKind.PAYMENT_AUTHORISED, EventKind.PAYMENT_FAILED)
# gRPC codes of a server that is away or overloaded, not of a request that is wrong
OUTAGE_CODES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.INTERNAL,
    }
)


class RiskUnknownError(OrderflowError):
    """Radar's risk of a payment's charge could not be read: the payment waits (retried like an
    outage) rather than reach the order unflagged."""

    def __init__(self, event: GatewayEvent, err: BaseException) -> None:
        super().__init__(
            f"{event.provider} event {event.event_id} ({event.type}): the Radar risk of charge"
            f" {event.risk_charge} could not be read ({err}); payment {event.payment_id} is not"
            f" passed to order {event.order_id or '(none)'} until it is"
        )
        self.event_id = event.event_id


def is_outage(err: BaseException) -> bool:
    """Whether `err` says a server we need is away (retry) rather than the event being wrong."""
    if isinstance(err, RiskUnknownError):
        return True
    if isinstance(err, RPCError):
        return err.status in OUTAGE_CODES
    if isinstance(err, RPCTimeoutOrCancelledError | WorkflowUpdateRPCTimeoutOrCancelledError):
        return True
    if isinstance(err, OperationalError | InterfaceError):  # database away or locked
        return True
    return isinstance(err, ConnectionError | TimeoutError | OSError)


class ReconciliationIncompleteError(OrderflowError):
    """The gateway stayed away past the outage window: the reconciliation's attempt fails."""


class ReconciliationRefusedError(UnrecoverableError, OrderflowError):
    """The gateway refused our key: no retry mends it, the job fails for an operator at once."""


class WebhookEventError(UnrecoverableError, OrderflowError):
    """An event that retrying cannot fix; the job goes to the dead-letter queue for an operator."""

    def __init__(
        self,
        event: GatewayEvent,
        problem: str,
        status: WebhookEventStatus = WebhookEventStatus.REJECTED,
    ) -> None:
        order = event.order_id or "(none)"
        super().__init__(
            f"{event.provider} event {event.event_id} ({event.type}) for order {order}: {problem}"
        )
        self.event_id = event.event_id
        self.order_id = event.order_id
        self.status = status  # how the event is recorded: REJECTED, or UNAPPLIED for money


class OrderNotYetKnownError(OrderflowError):
    """A charge event came before any event that names its order; retried, then dead-lettered."""

    def __init__(self, event: GatewayEvent) -> None:
        super().__init__(
            f"{event.provider} event {event.event_id} ({event.type}): payment {event.payment_id}"
            " has no order_id and no earlier event names its order; retrying"
        )
        self.event_id = event.event_id


def unapplied(event: GatewayEvent, problem: str) -> WebhookEventError:
    """The error of money the order refused: the event is recorded UNAPPLIED."""
    return WebhookEventError(event, problem, WebhookEventStatus.UNAPPLIED)


def minor_amount(event: GatewayEvent) -> int:
    """The event's amount in minor units; raises WebhookEventError if it is not one."""
    amount = event.amount_minor
    if problem := amount_problem(amount):
        raise WebhookEventError(event, f"amount {amount!r} is {problem}"[:300])
    assert isinstance(amount, int)
    return amount


def check_event(event: GatewayEvent) -> None:
    """Raise WebhookEventError if the event lacks what its kind needs."""
    if event.kind not in {k.value for k in EventKind} or event.kind == EventKind.IGNORED:
        raise WebhookEventError(event, f"kind {event.kind!r} is not one the worker applies")
    if event.kind in PAYMENT_KINDS and not event.order_id:
        try:
            where = providers.get(event.provider).order_id_field
        except providers.UnknownProviderError:
            where = f"the event (provider {event.provider!r} is not registered)"
        raise WebhookEventError(event, f"no order_id in {where}")
    if not event.payment_id:
        raise WebhookEventError(event, "no payment id")
    if event.kind in MONEY_KINDS:
        minor_amount(event)
        if problem := currency_problem(event.currency):
            code = "" if event.currency in ("", None) else f" {event.currency!r}"[:40]
            raise WebhookEventError(event, f"currency{code} is {problem}")
