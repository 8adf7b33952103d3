"""Stripe through its official SDK: PaymentIntents with manual capture, refunds, retrieve, list.

Its refunds are in stripe_refunds.py, the reading of Stripe's objects in stripe_objects.py,
and the mapping of Stripe's errors to the gateway's answers in stripe_errors.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import stripe

from orderflow.contracts.payment import (
    Checkout,
    CheckoutRequest,
    GatewayPayment,
    GatewayRefund,
    GatewayRequest,
    GatewayResponse,
    HoldState,
    HoldStatus,
)
from payments import stripe_refunds
from payments.events import STRIPE_RETRY_METADATA as RETRY_METADATA
from payments.stripe_errors import answer, declined, guard
from payments.stripe_objects import (
    CHARGE_PREFIX,
    NAME,
    PAGE,
    charge_of,
    charge_payment,
    field,
    id_of,
    intent_of,
    intent_payment,
    unknown,
)

# a PaymentIntent's status as a hold; any other (processing, requires_action, ...) is still held
HOLD_STATES = {
    "requires_capture": HoldState.HELD,
    "succeeded": HoldState.CAPTURED,
    "canceled": HoldState.RELEASED,
    "requires_payment_method": HoldState.RELEASED,  # no card authorised it: nothing is held
}


def _checkout_key(request: CheckoutRequest) -> str:
    """One key per order and request: a repeat gets the same PaymentIntent, another card its own.

    Stripe refuses a key sent again with other parameters, and answers a repeat with the first
    result (a decline too) for 24 hours, so the order id alone would block a second checkout.
    """
    asked = (request.amount, request.currency.upper(), request.customer, request.payment_method,
             request.capture_manually)  # fmt: skip
    digest = hashlib.sha256(repr(asked).encode()).hexdigest()[:16]
    return f"checkout-{request.order_id}-{digest}"


class StripeGateway:
    """Stripe's PaymentIntents API with one `StripeClient` per gateway (no global state).

    A capture takes the order's authorised PaymentIntent (`requires_capture`); one that failed
    is retried off-session with the customer's saved card as a new manual-capture intent. A
    card decline is a final answer; rate limits, connection errors and Stripe's 5xx raise
    GatewayUnavailableError so the activity retries with the same idempotency key.
    """

    name = NAME

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str = "",
        timeout: float = 20.0,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            # retries are Temporal's (durable, visible in the history), always with the same key
            max_network_retries=0,
            http_client=http_client or stripe.RequestsClient(timeout=timeout),
        )

    # --- money ---

    def capture(self, request: GatewayRequest) -> GatewayResponse:
        """Capture the order's authorised PaymentIntent, or charge its saved card again."""
        return guard(request.order_id, "capture", lambda: answer(self._capture, request))

    def _capture(self, request: GatewayRequest) -> GatewayResponse:
        intents = self.client.v1.payment_intents
        intent = intent_of(self.client, request)
        if intent is None:
            return declined(unknown(request))
        if intent.status in ("requires_capture", "succeeded"):
            # succeeded: an earlier call landed and its answer was lost. The capture is sent
            # again with the same key all the same: Stripe answers a repeated key with the
            # first result for 24 hours and charges nothing twice.
            if intent.status == "requires_capture" and (
                problem := self._amount_problem(intent, request)
            ):
                return declined(problem)
            try:
                intent = intents.capture(
                    intent.id,
                    # the order's total, not the whole hold (the rest is released)
                    params={"amount_to_capture": request.amount},
                    options={"idempotency_key": request.idempotency_key},
                )
            except stripe.InvalidRequestError:
                # past the key's 24 hours (or on a fake without keys) Stripe says "already
                # captured" instead: look before calling it a decline
                intent = intents.retrieve(intent.id)
                if intent.status != "succeeded":
                    raise
            return self._captured(intent, request)
        if intent.status in ("requires_payment_method", "canceled"):
            return self._charge_again(intent, request)
        return declined(
            f"PaymentIntent {intent.id} of order {request.order_id} is {intent.status}:"
            " the customer has to finish it"
        )

    def _charge_again(self, failed: Any, request: GatewayRequest) -> GatewayResponse:
        """A new manual-capture PaymentIntent on the customer's saved card, then its capture.

        An earlier attempt's intent that already holds the money (its answer was lost, so that
        attempt failed as a gateway error) is captured or answered instead: each attempt has
        its own idempotency key, so only looking first keeps the card from a second charge.
        """
        customer = id_of(field(failed, "customer", ""))
        if earlier := self._earlier_retry(failed, customer, request):
            if earlier.status == "requires_capture":
                if problem := self._amount_problem(earlier, request):
                    return declined(problem)
                earlier = self.client.v1.payment_intents.capture(
                    earlier.id,
                    params={"amount_to_capture": request.amount},
                    options={"idempotency_key": request.idempotency_key},
                )
            return self._captured(earlier, request)
        method = ""
        if customer:
            saved = self.client.v1.customers.retrieve(customer)
            method = id_of(field(field(saved, "invoice_settings"), "default_payment_method", ""))
        method = method or id_of(field(failed, "payment_method", ""))
        method = method or id_of(field(field(failed, "last_payment_error"), "payment_method", ""))
        if not method:
            return declined(
                f"PaymentIntent {failed.id} of order {request.order_id} failed and no saved"
                " payment method is left to charge"
            )
        params: dict[str, Any] = {
            "amount": request.amount,
            "currency": (request.currency or failed.currency).lower(),
            "payment_method": method,
            "payment_method_types": ["card"],  # a saved card: no redirect, no return_url
            "capture_method": "manual",
            "confirm": True,
            "off_session": True,
            "metadata": {"order_id": request.order_id, RETRY_METADATA: str(request.attempt)},
        }
        if customer:
            params["customer"] = customer
        intents = self.client.v1.payment_intents
        intent = intents.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": f"{request.idempotency_key}-intent"},
        )
        if intent.status != "requires_capture":
            return declined(f"PaymentIntent {intent.id} is {intent.status} after confirm")
        intent = intents.capture(intent.id, options={"idempotency_key": request.idempotency_key})
        return self._captured(intent, request)

    def _earlier_retry(self, failed: Any, customer: str, request: GatewayRequest) -> Any:
        """An intent an earlier retry of this order made that holds money, else None.

        Found through the customer's charges since the failed intent (Stripe and localstripe both
        filter charges by customer and creation; the Search API is not everywhere).
        """
        if not customer:
            return None
        params = {"customer": customer, "created": {"gt": int(failed.created) - 1}, "limit": PAGE}
        charges = self.client.v1.charges.list(params=params)  # type: ignore[arg-type]
        for charge in charges.data:
            intent_id = id_of(field(charge, "payment_intent", ""))
            if not intent_id or intent_id == failed.id:
                continue
            intent = self.client.v1.payment_intents.retrieve(intent_id)
            metadata = field(intent, "metadata", {})
            if (
                field(metadata, "order_id") == request.order_id
                and field(metadata, RETRY_METADATA)
                and intent.status in ("requires_capture", "succeeded")
            ):
                return intent
        return None

    def refund(self, request: GatewayRequest) -> GatewayResponse:
        """Refund `request.payment_id`: a PaymentIntent (else the order's newest) or a bare charge."""
        return guard(
            request.order_id,
            "refund",
            lambda: answer(lambda r: stripe_refunds.refund(self.client, r), request),
        )

    def release(self, request: GatewayRequest) -> GatewayResponse:
        """Cancel the uncaptured PaymentIntent `request.payment_id`: the hold is released."""
        return guard(request.order_id, "release", lambda: answer(self._release, request))

    def _release(self, request: GatewayRequest) -> GatewayResponse:
        intent = intent_of(self.client, request) if request.payment_id else None
        if intent is None:
            return declined(unknown(request))
        if intent.status in ("requires_capture", "requires_payment_method",
                             "requires_confirmation", "requires_action"):  # fmt: skip
            intent = self.client.v1.payment_intents.cancel(
                intent.id, options={"idempotency_key": request.idempotency_key}
            )
        if intent.status == "canceled":
            return GatewayResponse(
                succeeded=True,
                payment_id=intent.id,
                detail=f"released {intent.id}",
                provider=self.name,
            )
        return declined(f"PaymentIntent {intent.id} is {intent.status}: not released")

    # --- reading ---

    def charge_risk(self, charge_id: str) -> str:
        """Radar's `outcome.risk_level` of a charge ("" if Radar gave none, e.g. not assessed yet).

        Raises:
            GatewayUnavailableError: Stripe did not answer (the caller retries).
            GatewayConfigError: Stripe refused the call or knows no such charge.
        """

        def read() -> str:
            charge = self.client.v1.charges.retrieve(charge_id)
            return str(field(field(charge, "outcome", {}), "risk_level", ""))

        return guard("-", f"risk of charge {charge_id}", read)

    def hold_status(self, request: GatewayRequest) -> HoldStatus:
        """The PaymentIntent `request.payment_id` as a hold: what it captured and refunded."""

        def read() -> HoldStatus:
            intent = intent_of(self.client, request) if request.payment_id else None
            if intent is None:
                return HoldStatus(request.payment_id, HoldState.UNKNOWN, detail=unknown(request))
            payment = intent_payment(self.client, intent)
            return HoldStatus(
                payment_id=intent.id,
                state=HOLD_STATES.get(str(intent.status), HoldState.HELD),
                captured=payment.captured,
                refunded=payment.refunded,
                currency=payment.currency,
                detail=str(intent.status),
            )

        return guard(request.order_id, f"hold status of {request.payment_id}", read)

    def fetch(self, payment_id: str) -> GatewayPayment | None:
        """A PaymentIntent as a payment (None: Stripe does not know the id)."""

        def read() -> GatewayPayment | None:
            if payment_id.startswith(CHARGE_PREFIX):
                charge = charge_of(self.client, payment_id)
                return None if charge is None else charge_payment(charge)
            try:
                intent = self.client.v1.payment_intents.retrieve(payment_id)
            except stripe.InvalidRequestError as err:
                if err.code == "resource_missing" or err.http_status == 404:
                    return None
                raise
            return intent_payment(self.client, intent)

        return guard("-", f"fetch of {payment_id}", read)

    def list_payments(self, since: datetime) -> list[GatewayPayment]:
        """Every charge since `since`, one payment per PaymentIntent (captured and refunded)."""
        return guard("-", "listing", lambda: list(self._payments(since)))

    def list_refunds(self, payment_id: str) -> list[GatewayRefund]:
        """The refunds of a PaymentIntent (or of a bare `ch_` charge), newest first."""
        return guard(
            "-",
            f"refunds of {payment_id}",
            lambda: stripe_refunds.list_refunds(self.client, payment_id),
        )

    def _payments(self, since: datetime) -> Iterator[GatewayPayment]:
        seen: set[str] = set()
        params: dict[str, Any] = {"limit": PAGE, "created": {"gt": int(since.timestamp()) - 1}}
        while True:
            page = self.client.v1.charges.list(params=params)  # type: ignore[arg-type]
            for charge in page.data:
                intent_id = id_of(field(charge, "payment_intent", ""))
                if intent_id in seen:
                    continue
                if intent_id:
                    seen.add(intent_id)
                    yield intent_payment(
                        self.client, self.client.v1.payment_intents.retrieve(intent_id)
                    )
                else:  # a bare charge (no PaymentIntent)
                    yield charge_payment(charge)
            if not page.has_more or not page.data:
                return
            params["starting_after"] = page.data[-1].id

    # --- checkout ---

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """A PaymentIntent for the order's total with `metadata.order_id` (one per request)."""
        params: dict[str, Any] = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "metadata": {"order_id": request.order_id},
            "capture_method": "manual" if request.capture_manually else "automatic",
        }
        if request.customer:
            params["customer"] = request.customer
        if request.payment_method:  # a saved card confirmed server-side: no redirect
            params["payment_method"] = request.payment_method
            params["payment_method_types"] = ["card"]
            params["confirm"] = True

        def create() -> Checkout:
            try:
                intent = self.client.v1.payment_intents.create(
                    params=params,  # type: ignore[arg-type]
                    options={"idempotency_key": _checkout_key(request)},
                )
            except stripe.CardError as err:  # declined at once; the webhook tells the order too
                error = field(err.json_body, "error", {})
                return Checkout(
                    provider=self.name,
                    payment_id=id_of(field(error, "payment_intent", "")),
                    status="requires_payment_method",
                    amount=request.amount,
                    currency=request.currency,
                    detail=f"card declined: {err.user_message or err}",
                )
            return Checkout(
                provider=self.name,
                payment_id=intent.id,
                status=str(intent.status),
                client_secret=str(field(intent, "client_secret", "")),
                amount=int(intent.amount),
                currency=str(intent.currency).upper(),
            )

        return guard(request.order_id, "checkout", create)

    # --- helpers ---

    def _amount_problem(self, intent: Any, request: GatewayRequest) -> str:
        currency = str(intent.currency).upper()
        capturable = int(field(intent, "amount_capturable", 0) or field(intent, "amount", 0))
        if request.currency and currency != request.currency.upper():
            return f"PaymentIntent {intent.id} is in {currency}, order {request.order_id} in {request.currency}"
        if capturable < request.amount:
            return (
                f"PaymentIntent {intent.id} authorises {capturable} minor units,"
                f" order {request.order_id} needs {request.amount}"
            )
        return ""

    def _captured(self, intent: Any, request: GatewayRequest) -> GatewayResponse:
        if intent.status != "succeeded":
            return declined(f"PaymentIntent {intent.id} is {intent.status} after capture")
        return GatewayResponse(
            succeeded=True,
            payment_id=intent.id,
            detail=f"captured {field(intent, 'amount_received', request.amount)}",
            provider=self.name,
        )
