"""Stripe through its official SDK: PaymentIntents with manual capture, refunds, retrieve, list."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import stripe

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
)
from payments.events import STRIPE_RETRY_METADATA as RETRY_METADATA
from payments.gateway import GatewayConfigError, GatewayUnavailableError

T = TypeVar("T")
PAGE = 100  # Stripe's largest list page
CHARGE_PREFIX = "ch_"  # a payment made with the legacy Charges API (no PaymentIntent)
REFUND_GONE = ("failed", "canceled")  # a refund in these states gave nothing back
# a refund in these states is neither done nor declined: waiting on the bank or on the customer
REFUND_UNDER_WAY = ("pending", "requires_action")
# a PaymentIntent's status as a hold; any other (processing, requires_action, ...) is still held
HOLD_STATES = {
    "requires_capture": HoldState.HELD,
    "succeeded": HoldState.CAPTURED,
    "canceled": HoldState.RELEASED,
    "requires_payment_method": HoldState.RELEASED,  # no card authorised it: nothing is held
}


def _field(obj: Any, name: str, default: Any = None) -> Any:
    """A field of a Stripe object or of a plain dict (expanded objects come back as either)."""
    if obj is None:
        return default
    try:
        value = obj[name]
    except (KeyError, TypeError, IndexError):
        return default
    return default if value is None else value


def _id(obj: Any) -> str:
    """The id of an expandable field, whether Stripe sent the id or the object."""
    return obj if isinstance(obj, str) else str(_field(obj, "id", ""))


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

    name = GatewayName.STRIPE.value

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
        return self._guard(
            request.order_id, "capture", lambda: self._answer(self._capture, request)
        )

    def _capture(self, request: GatewayRequest) -> GatewayResponse:
        intents = self.client.v1.payment_intents
        intent = self._intent_of(request)
        if intent is None:
            return self._declined(self._unknown(request))
        if intent.status in ("requires_capture", "succeeded"):
            # succeeded: an earlier call landed and its answer was lost. The capture is sent
            # again with the same key all the same: Stripe answers a repeated key with the
            # first result for 24 hours and charges nothing twice.
            if intent.status == "requires_capture" and (
                problem := self._amount_problem(intent, request)
            ):
                return self._declined(problem)
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
        return self._declined(
            f"PaymentIntent {intent.id} of order {request.order_id} is {intent.status}:"
            " the customer has to finish it"
        )

    def _charge_again(self, failed: Any, request: GatewayRequest) -> GatewayResponse:
        """A new manual-capture PaymentIntent on the customer's saved card, then its capture.

        An earlier attempt's intent that already holds the money (its answer was lost, so that
        attempt failed as a gateway error) is captured or answered instead: each attempt has
        its own idempotency key, so only looking first keeps the card from a second charge.
        """
        customer = _id(_field(failed, "customer", ""))
        if earlier := self._earlier_retry(failed, customer, request):
            if earlier.status == "requires_capture":
                if problem := self._amount_problem(earlier, request):
                    return self._declined(problem)
                earlier = self.client.v1.payment_intents.capture(
                    earlier.id,
                    params={"amount_to_capture": request.amount},
                    options={"idempotency_key": request.idempotency_key},
                )
            return self._captured(earlier, request)
        method = ""
        if customer:
            saved = self.client.v1.customers.retrieve(customer)
            method = _id(_field(_field(saved, "invoice_settings"), "default_payment_method", ""))
        method = method or _id(_field(failed, "payment_method", ""))
        method = method or _id(_field(_field(failed, "last_payment_error"), "payment_method", ""))
        if not method:
            return self._declined(
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
            return self._declined(f"PaymentIntent {intent.id} is {intent.status} after confirm")
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
            intent_id = _id(_field(charge, "payment_intent", ""))
            if not intent_id or intent_id == failed.id:
                continue
            intent = self.client.v1.payment_intents.retrieve(intent_id)
            metadata = _field(intent, "metadata", {})
            if (
                _field(metadata, "order_id") == request.order_id
                and _field(metadata, RETRY_METADATA)
                and intent.status in ("requires_capture", "succeeded")
            ):
                return intent
        return None

    def refund(self, request: GatewayRequest) -> GatewayResponse:
        """Refund `request.payment_id`: a PaymentIntent (else the order's newest) or a bare charge."""
        return self._guard(request.order_id, "refund", lambda: self._answer(self._refund, request))

    def _refund(self, request: GatewayRequest) -> GatewayResponse:
        # a legacy Charges API payment (`ch_…`, no PaymentIntent) is refunded by its charge
        paid: dict[str, str] = {}
        if request.payment_id.startswith(CHARGE_PREFIX):
            charge = self._charge_of(request.payment_id)
            if charge is not None:
                paid = {"charge": charge.id}
        elif (intent := self._intent_of(request)) is not None:
            paid = {"payment_intent": intent.id}
        if not paid:
            return self._declined(self._unknown(request))
        refund = self._earlier_refund(paid, request) or self.client.v1.refunds.create(
            params={
                **paid,
                "amount": request.amount,
                "metadata": {"order_id": request.order_id},
            },  # type: ignore[arg-type]
            options={"idempotency_key": request.idempotency_key},
        )
        [of] = paid.values()
        if refund.status == "succeeded":
            return GatewayResponse(
                succeeded=True,
                payment_id=refund.id,
                detail=f"refunded {of} (succeeded)",
                provider=self.name,
            )
        if refund.status in REFUND_UNDER_WAY:
            # not a decline: money may still move, and a new attempt would start a second
            # refund. Stripe ends it by itself; its refund.failed (or charge.refund.updated)
            # comes as a webhook and puts the order to REFUND_FAILED (payments/processor.py)
            return GatewayResponse(
                succeeded=True,
                payment_id=refund.id,
                detail=f"refund of {of} under way ({refund.status}): Stripe reports its end",
                provider=self.name,
            )
        return self._declined(f"refund {refund.id} of {of} is {refund.status}")

    def _earlier_refund(self, paid: dict[str, str], request: GatewayRequest) -> Any:
        """A refund of this payment an earlier attempt made for the order, else None.

        Each attempt has its own idempotency key: an attempt whose every answer was lost
        refunded all the same, and the next one must find that refund, not pay again. One
        that failed or was cancelled moved no money and does not count.
        """
        found = self.client.v1.refunds.list(params={**paid, "limit": PAGE})  # type: ignore[arg-type]
        for refund in found.data:
            if (
                _field(_field(refund, "metadata", {}), "order_id") == request.order_id
                and int(_field(refund, "amount", 0)) == request.amount
                and _field(refund, "status") not in REFUND_GONE
            ):
                return refund
        return None

    def release(self, request: GatewayRequest) -> GatewayResponse:
        """Cancel the uncaptured PaymentIntent `request.payment_id`: the hold is released."""
        return self._guard(
            request.order_id, "release", lambda: self._answer(self._release, request)
        )

    def _release(self, request: GatewayRequest) -> GatewayResponse:
        intent = self._intent_of(request) if request.payment_id else None
        if intent is None:
            return self._declined(self._unknown(request))
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
        return self._declined(f"PaymentIntent {intent.id} is {intent.status}: not released")

    # --- reading ---

    def charge_risk(self, charge_id: str) -> str:
        """Radar's `outcome.risk_level` of a charge ("" if Radar gave none, e.g. not assessed yet).

        Raises:
            GatewayUnavailableError: Stripe did not answer (the caller retries).
            GatewayConfigError: Stripe refused the call or knows no such charge.
        """

        def read() -> str:
            charge = self.client.v1.charges.retrieve(charge_id)
            return str(_field(_field(charge, "outcome", {}), "risk_level", ""))

        return self._guard("-", f"risk of charge {charge_id}", read)

    def hold_status(self, request: GatewayRequest) -> HoldStatus:
        """The PaymentIntent `request.payment_id` as a hold: what it captured and refunded."""

        def read() -> HoldStatus:
            intent = self._intent_of(request) if request.payment_id else None
            if intent is None:
                return HoldStatus(
                    request.payment_id, HoldState.UNKNOWN, detail=self._unknown(request)
                )
            payment = self._payment(intent)
            return HoldStatus(
                payment_id=intent.id,
                state=HOLD_STATES.get(str(intent.status), HoldState.HELD),
                captured=payment.captured,
                refunded=payment.refunded,
                currency=payment.currency,
                detail=str(intent.status),
            )

        return self._guard(request.order_id, f"hold status of {request.payment_id}", read)

    def fetch(self, payment_id: str) -> GatewayPayment | None:
        """A PaymentIntent as a payment (None: Stripe does not know the id)."""

        def read() -> GatewayPayment | None:
            if payment_id.startswith(CHARGE_PREFIX):
                charge = self._charge_of(payment_id)
                return None if charge is None else self._charge_payment(charge)
            try:
                intent = self.client.v1.payment_intents.retrieve(payment_id)
            except stripe.InvalidRequestError as err:
                if err.code == "resource_missing" or err.http_status == 404:
                    return None
                raise
            return self._payment(intent)

        return self._guard("-", f"fetch of {payment_id}", read)

    def list_payments(self, since: datetime) -> list[GatewayPayment]:
        """Every charge since `since`, one payment per PaymentIntent (captured and refunded)."""
        return self._guard("-", "listing", lambda: list(self._payments(since)))

    def list_refunds(self, payment_id: str) -> list[GatewayRefund]:
        """The refunds of a PaymentIntent (or of a bare `ch_` charge), newest first."""
        of = "charge" if payment_id.startswith(CHARGE_PREFIX) else "payment_intent"

        def read() -> list[GatewayRefund]:
            found = self.client.v1.refunds.list(params={of: payment_id, "limit": PAGE})  # type: ignore[arg-type]
            return [
                GatewayRefund(
                    provider=self.name,
                    refund_id=str(r.id),
                    payment_id=payment_id,
                    order_id=str(_field(_field(r, "metadata", {}), "order_id", "")),
                    amount=int(_field(r, "amount", 0)),
                    currency=str(_field(r, "currency", "")).upper(),
                    status=str(_field(r, "status", "")),
                )
                for r in found.data
            ]

        return self._guard("-", f"refunds of {payment_id}", read)

    def _payments(self, since: datetime) -> Iterator[GatewayPayment]:
        seen: set[str] = set()
        params: dict[str, Any] = {"limit": PAGE, "created": {"gt": int(since.timestamp()) - 1}}
        while True:
            page = self.client.v1.charges.list(params=params)  # type: ignore[arg-type]
            for charge in page.data:
                intent_id = _id(_field(charge, "payment_intent", ""))
                if intent_id in seen:
                    continue
                if intent_id:
                    seen.add(intent_id)
                    yield self._payment(self.client.v1.payment_intents.retrieve(intent_id))
                else:  # a bare charge (no PaymentIntent)
                    yield self._charge_payment(charge)
            if not page.has_more or not page.data:
                return
            params["starting_after"] = page.data[-1].id

    def _payment(self, intent: Any) -> GatewayPayment:
        charge = _field(intent, "latest_charge")
        if isinstance(charge, str):
            charge = self.client.v1.charges.retrieve(charge)
        received = int(_field(intent, "amount_received", 0))
        if not received and charge is not None and _field(charge, "captured", False):
            received = int(_field(charge, "amount_captured", _field(charge, "amount", 0)))
        return GatewayPayment(
            provider=self.name,
            payment_id=intent.id,
            order_id=str(_field(_field(intent, "metadata", {}), "order_id", "")),
            status=str(intent.status),
            captured=received if intent.status == "succeeded" else 0,
            refunded=int(_field(charge, "amount_refunded", 0)) if charge is not None else 0,
            currency=str(intent.currency).upper(),
            created=float(_field(intent, "created", 0)),
        )

    def _charge_payment(self, charge: Any) -> GatewayPayment:
        captured = _field(charge, "captured", False) and _field(charge, "status") == "succeeded"
        return GatewayPayment(
            provider=self.name,
            payment_id=charge.id,
            order_id=str(_field(_field(charge, "metadata", {}), "order_id", "")),
            status=str(_field(charge, "status", "")),
            captured=int(_field(charge, "amount_captured", _field(charge, "amount", 0)))
            if captured
            else 0,
            refunded=int(_field(charge, "amount_refunded", 0)),
            currency=str(_field(charge, "currency", "")).upper(),
            created=float(_field(charge, "created", 0)),
        )

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
                error = _field(err.json_body, "error", {})
                return Checkout(
                    provider=self.name,
                    payment_id=_id(_field(error, "payment_intent", "")),
                    status="requires_payment_method",
                    amount=request.amount,
                    currency=request.currency,
                    detail=f"card declined: {err.user_message or err}",
                )
            return Checkout(
                provider=self.name,
                payment_id=intent.id,
                status=str(intent.status),
                client_secret=str(_field(intent, "client_secret", "")),
                amount=int(intent.amount),
                currency=str(intent.currency).upper(),
            )

        return self._guard(request.order_id, "checkout", create)

    # --- helpers ---

    @staticmethod
    def _unknown(request: GatewayRequest) -> str:
        what = "charge" if request.payment_id.startswith(CHARGE_PREFIX) else "PaymentIntent"
        named = f"{what} {request.payment_id!r}" if request.payment_id else what
        return f"no Stripe {named} known for order {request.order_id}"

    def _charge_of(self, charge_id: str) -> Any:
        """A charge by id (None: Stripe does not know it)."""
        try:
            return self.client.v1.charges.retrieve(charge_id)
        except stripe.InvalidRequestError as err:
            if err.code == "resource_missing" or err.http_status == 404:
                return None
            raise

    def _intent_of(self, request: GatewayRequest) -> Any:
        """The PaymentIntent named by the request, else the order's newest one (Search API).

        A payment id of another provider (a Razorpay `pay_`, a simulated one) names nothing here:
        refunding the order's Stripe payment instead could give back the wrong money.
        """
        intents = self.client.v1.payment_intents
        if request.payment_id and not request.payment_id.startswith("pi_"):
            return None
        if request.payment_id:
            try:
                return intents.retrieve(request.payment_id)
            except stripe.InvalidRequestError as err:
                if err.http_status != 404:
                    raise
                return None
        try:
            found = intents.search(
                params={"query": f"metadata['order_id']:'{request.order_id}'", "limit": 10}
            )
        except stripe.InvalidRequestError:
            return None  # search is not offered (some accounts, local fakes)
        ranked = sorted(found.data, key=lambda i: (i.status == "succeeded", i.created))
        return ranked[-1] if ranked else None

    def _amount_problem(self, intent: Any, request: GatewayRequest) -> str:
        currency = str(intent.currency).upper()
        capturable = int(_field(intent, "amount_capturable", 0) or _field(intent, "amount", 0))
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
            return self._declined(f"PaymentIntent {intent.id} is {intent.status} after capture")
        return GatewayResponse(
            succeeded=True,
            payment_id=intent.id,
            detail=f"captured {_field(intent, 'amount_received', request.amount)}",
            provider=self.name,
        )

    def _declined(self, detail: str) -> GatewayResponse:
        return GatewayResponse(succeeded=False, detail=detail, provider=self.name)

    def _answer(
        self, call: Callable[[GatewayRequest], GatewayResponse], request: GatewayRequest
    ) -> GatewayResponse:
        """A decline or a refused request about this payment is the gateway's final answer."""
        try:
            return call(request)
        except stripe.CardError as err:
            return self._declined(f"card declined: {err.user_message or err}")
        except stripe.InvalidRequestError as err:
            if (err.http_status or 0) >= 500:
                raise
            return self._declined(f"{request.kind.value} refused: {err.user_message or err}")

    def _guard(self, order_id: str, what: str, call: Callable[[], T]) -> T:
        """Run Stripe calls: unreachable, rate-limited or 5xx is retried; a refusal of us is not."""
        try:
            return call()
        except (stripe.RateLimitError, stripe.APIConnectionError, stripe.APIError) as err:
            raise GatewayUnavailableError(self.name, order_id, what, str(err)) from err
        except stripe.StripeError as err:
            if (err.http_status or 0) >= 500 or err.http_status == 429:
                raise GatewayUnavailableError(self.name, order_id, what, str(err)) from err
            # authentication, permission, or a request Stripe refuses: fix the setup, not retry
            raise GatewayConfigError(self.name, order_id, f"{what}: {err}") from err
