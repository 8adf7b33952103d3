"""Razorpay through its official SDK: capture an authorised payment, refund, fetch, list (paise)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError

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
from payments.gateway import GatewayConfigError, GatewayUnavailableError

T = TypeVar("T")
PAGE = 100  # Razorpay's largest `count`
AUTH_FAILED = "authentication failed"  # Razorpay's 401 comes back as a BAD_REQUEST_ERROR


def _notes(entity: dict[str, Any]) -> dict[str, Any]:
    notes = entity.get("notes")
    return notes if isinstance(notes, dict) else {}  # Razorpay sends [] for no notes


class RazorpayGateway:
    """Razorpay's Payments API; amounts are paise (minor units), as everywhere here.

    A capture takes the order's `authorized` payment (Razorpay never charges a card again by
    itself: a failed payment is final and the customer pays anew). Refunds carry the
    idempotency key as their `receipt`, and an existing refund with that receipt is answered
    instead of refunding twice (Razorpay has no idempotency header for refunds).
    """

    name = GatewayName.RAZORPAY.value

    def __init__(
        self, key_id: str, key_secret: str, *, api_base: str = "", timeout: float = 20.0
    ) -> None:
        options = {"base_url": api_base.rstrip("/")} if api_base else {}
        self.client = razorpay.Client(auth=(key_id, key_secret), **options)
        self.timeout = timeout

    # --- money ---

    def capture(self, request: GatewayRequest) -> GatewayResponse:
        """Capture the order's authorised payment; one already captured is the answer."""
        return self._guard(
            request.order_id, "capture", lambda: self._answer(self._capture, request)
        )

    def _capture(self, request: GatewayRequest) -> GatewayResponse:
        payment = self._payment_of(request)
        if payment is None:
            return self._declined(self._unknown(request))
        pid, status = payment["id"], payment.get("status")
        if status == "authorized":
            if problem := self._amount_problem(payment, request):
                return self._declined(problem)
            try:
                payment = self.client.payment.capture(
                    pid,
                    request.amount,
                    {"currency": payment.get("currency") or request.currency},
                    timeout=self.timeout,
                )
            except BadRequestError:
                payment = self._fetch(pid)  # captured by an earlier call whose answer was lost
                if payment.get("status") != "captured":
                    raise
            status = payment.get("status")
        if status in ("captured", "refunded"):
            return GatewayResponse(
                succeeded=True,
                payment_id=pid,
                detail=f"captured {payment.get('amount')}",
                provider=self.name,
            )
        reason = payment.get("error_description") or f"payment {pid} is {status}"
        return self._declined(f"payment {pid} of order {request.order_id}: {reason}")

    def refund(self, request: GatewayRequest) -> GatewayResponse:
        """Refund `request.payment_id` (or the order's captured payment) once per key."""
        return self._guard(request.order_id, "refund", lambda: self._answer(self._refund, request))

    def _refund(self, request: GatewayRequest) -> GatewayResponse:
        payment = self._payment_of(request)
        if payment is None:
            return self._declined(self._unknown(request))
        pid = payment["id"]
        earlier = self.client.payment.fetch_multiple_refund(pid, {}, timeout=self.timeout)
        items = earlier.get("items", [])
        # this attempt's own refund (its receipt), else one an earlier attempt of the order made
        # whose answer was lost: the next attempt's receipt differs, only looking finds it
        refund = next((r for r in items if r.get("receipt") == request.idempotency_key), None)
        refund = refund or next(
            (
                r
                for r in items
                if _notes(r).get("order_id") == request.order_id
                and int(r.get("amount", 0)) == request.amount
                and r.get("status") != "failed"
            ),
            None,
        )
        if refund is None:
            refund = self.client.payment.refund(
                pid,
                {
                    "amount": request.amount,
                    "receipt": request.idempotency_key,
                    "notes": {"order_id": request.order_id},
                },
                timeout=self.timeout,
            )
        if refund.get("status") in ("processed", "pending"):  # pending: Razorpay finishes it
            return GatewayResponse(
                succeeded=True,
                payment_id=refund["id"],
                detail=f"refunded {pid} ({refund.get('status')})",
                provider=self.name,
            )
        return self._declined(f"refund {refund.get('id')} of {pid} is {refund.get('status')}")

    def release(self, request: GatewayRequest) -> GatewayResponse:
        """An `authorized` payment is left uncaptured: Razorpay has no call to void it and
        refunds it to the customer by itself once its capture window ends."""

        def release() -> GatewayResponse:
            payment = self._payment_of(request) if request.payment_id else None
            if payment is None:
                return self._declined(self._unknown(request))
            if payment.get("status") in ("authorized", "failed"):
                return GatewayResponse(
                    succeeded=True,
                    payment_id=str(payment["id"]),
                    detail=f"left {payment['id']} uncaptured (Razorpay refunds it by itself)",
                    provider=self.name,
                )
            return self._declined(f"payment {payment['id']} is {payment.get('status')}")

        return self._guard(
            request.order_id, "release", lambda: self._answer(lambda _: release(), request)
        )

    # --- reading ---

    def hold_status(self, request: GatewayRequest) -> HoldStatus:
        """The payment `request.payment_id` as a hold (Razorpay's `authorized` is held).

        An uncaptured payment Razorpay gave back by itself (its capture window ended) is
        `refunded` with `captured` false: released, nothing was taken.
        """

        def read() -> HoldStatus:
            payment = self._payment_of(request) if request.payment_id else None
            if payment is None:
                return HoldStatus(
                    request.payment_id, HoldState.UNKNOWN, detail=self._unknown(request)
                )
            status = str(payment.get("status", ""))
            if payment.get("captured") or status == "captured":
                state = HoldState.CAPTURED
            elif status == "authorized":
                state = HoldState.HELD
            else:  # failed, created, or refunded uncaptured
                state = HoldState.RELEASED
            taken = state is HoldState.CAPTURED
            return HoldStatus(
                payment_id=str(payment["id"]),
                state=state,
                captured=int(payment.get("amount", 0)) if taken else 0,
                refunded=int(payment.get("amount_refunded", 0) or 0) if taken else 0,
                currency=str(payment.get("currency", "")).upper(),
                detail=status,
            )

        return self._guard(request.order_id, f"hold status of {request.payment_id}", read)

    def fetch(self, payment_id: str) -> GatewayPayment | None:
        """One payment (None: Razorpay does not know the id)."""

        def read() -> GatewayPayment | None:
            try:
                return self._gateway_payment(self._fetch(payment_id))
            except BadRequestError as err:
                if AUTH_FAILED in str(err).lower():
                    raise
                return None

        return self._guard("-", f"fetch of {payment_id}", read)

    def list_payments(self, since: datetime) -> list[GatewayPayment]:
        """Every payment created since `since`, page by page."""
        return self._guard("-", "listing", lambda: list(self._payments(since)))

    def list_refunds(self, payment_id: str) -> list[GatewayRefund]:
        """The refunds of one payment."""

        def read() -> list[GatewayRefund]:
            found = self.client.payment.fetch_multiple_refund(payment_id, {}, timeout=self.timeout)
            return [
                GatewayRefund(
                    provider=self.name,
                    refund_id=str(r.get("id", "")),
                    payment_id=payment_id,
                    order_id=str(_notes(r).get("order_id", "")),
                    amount=int(r.get("amount", 0)),
                    currency=str(r.get("currency", "")).upper(),
                    status=str(r.get("status", "")),
                )
                for r in found.get("items", [])
            ]

        return self._guard("-", f"refunds of {payment_id}", read)

    def _payments(self, since: datetime) -> Iterator[GatewayPayment]:
        skip = 0
        while True:
            page = self.client.payment.all(
                {"from": int(since.timestamp()), "count": PAGE, "skip": skip}, timeout=self.timeout
            )
            items = page.get("items", [])
            for item in items:
                yield self._gateway_payment(item)
            if len(items) < PAGE:
                return
            skip += len(items)

    def _gateway_payment(self, payment: dict[str, Any]) -> GatewayPayment:
        status = str(payment.get("status", ""))
        taken = status in ("captured", "refunded") or bool(payment.get("captured"))
        return GatewayPayment(
            provider=self.name,
            payment_id=str(payment.get("id", "")),
            order_id=str(_notes(payment).get("order_id", "")),
            status=status,
            captured=int(payment.get("amount", 0)) if taken else 0,
            refunded=int(payment.get("amount_refunded", 0) or 0),
            currency=str(payment.get("currency", "")).upper(),
            created=float(payment.get("created_at", 0)),
        )

    # --- checkout ---

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """A Razorpay order for the total, `receipt` and `notes.order_id` = our order id."""

        def create() -> Checkout:
            existing = self._orders_of(request.order_id)
            order = existing[0] if existing else None
            if order is None:
                order = self.client.order.create(
                    {
                        "amount": request.amount,
                        "currency": request.currency,
                        "receipt": request.order_id,
                        "notes": {"order_id": request.order_id},
                        # Razorpay captures at once unless told otherwise (manual: capture later)
                        "payment_capture": 0 if request.capture_manually else 1,
                    },
                    timeout=self.timeout,
                )
            return Checkout(
                provider=self.name,
                payment_id=str(order["id"]),
                status=str(order.get("status", "")),
                amount=int(order.get("amount", request.amount)),
                currency=str(order.get("currency", request.currency)),
            )

        return self._guard(request.order_id, "checkout", create)

    # --- helpers ---

    def _fetch(self, payment_id: str) -> dict[str, Any]:
        return dict(self.client.payment.fetch(payment_id, {}, timeout=self.timeout))

    def _orders_of(self, order_id: str) -> list[dict[str, Any]]:
        found = self.client.order.all({"receipt": order_id}, timeout=self.timeout)
        return list(found.get("items", []))

    def _payment_of(self, request: GatewayRequest) -> dict[str, Any] | None:
        """The payment the request names, else the order's captured or authorised one.

        A payment id of another provider names nothing here (see stripe_objects.intent_of).
        """
        if request.payment_id and not request.payment_id.startswith("pay_"):
            return None
        if request.payment_id:
            try:
                return self._fetch(request.payment_id)
            except BadRequestError as err:
                if AUTH_FAILED in str(err).lower():
                    raise
                return None  # "The id provided does not exist"
        candidates: list[dict[str, Any]] = []
        for order in self._orders_of(request.order_id):
            found = self.client.order.payments(order["id"], {}, timeout=self.timeout)
            candidates += found.get("items", [])
        rank = {"captured": 3, "refunded": 3, "authorized": 2, "created": 1}
        candidates.sort(key=lambda p: (rank.get(p.get("status", ""), 0), p.get("created_at", 0)))
        return candidates[-1] if candidates else None

    @staticmethod
    def _unknown(request: GatewayRequest) -> str:
        named = f"payment {request.payment_id!r}" if request.payment_id else "payment"
        return f"no Razorpay {named} known for order {request.order_id}"

    def _amount_problem(self, payment: dict[str, Any], request: GatewayRequest) -> str:
        currency = str(payment.get("currency", "")).upper()
        if request.currency and currency != request.currency.upper():
            return f"payment {payment['id']} is in {currency}, order {request.order_id} in {request.currency}"
        if int(payment.get("amount", 0)) != request.amount:
            return (
                f"payment {payment['id']} authorises {payment.get('amount')} paise,"
                f" order {request.order_id} is {request.amount}"
            )
        return ""

    def _declined(self, detail: str) -> GatewayResponse:
        return GatewayResponse(succeeded=False, detail=detail, provider=self.name)

    def _answer(
        self, call: Callable[[GatewayRequest], GatewayResponse], request: GatewayRequest
    ) -> GatewayResponse:
        """Razorpay refusing this payment (BAD_REQUEST_ERROR) is its final answer."""
        try:
            return call(request)
        except BadRequestError as err:
            if AUTH_FAILED in str(err).lower():
                raise
            return self._declined(f"{request.kind.value} refused by Razorpay: {err}")

    def _guard(self, order_id: str, what: str, call: Callable[[], T]) -> T:
        """Unreachable or Razorpay's 5xx is retried; a refusal of our keys is not."""
        try:
            return call()
        except (requests.RequestException, GatewayError, ServerError) as err:
            raise GatewayUnavailableError(self.name, order_id, what, str(err) or repr(err)) from err
        except BadRequestError as err:
            raise GatewayConfigError(self.name, order_id, f"{what}: {err}") from err
