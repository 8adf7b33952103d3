"""The order API's request and answer bodies (what its OpenAPI document shows)."""

# no `from __future__ import annotations`: FastAPI reads these models' annotations
import re

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from app.web.api_problems import ApiProblem
from orderflow.contracts.order import OrderState
from orderflow.contracts.payment import Checkout

MAX_AMOUNT = 10**15  # minor units: far above any order, far below a 64-bit overflow
ORDER_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # also a valid BullMQ job id part


class LineIn(BaseModel):
    """One line of a new order."""

    model_config = ConfigDict(extra="forbid")
    sku: str = Field(min_length=1, max_length=64, description="A SKU of the catalogue.")
    quantity: StrictInt = Field(ge=1, le=10_000, description="How many, 1 to 10,000.")


class OrderCreate(BaseModel):
    """A new order. Its id comes from here or from the `Idempotency-Key` header."""

    model_config = ConfigDict(extra="forbid")
    order_id: str | None = Field(None, pattern=ORDER_ID, description="The order service's id.")
    customer_id: str = Field(min_length=1, max_length=128)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    items: list[LineIn] = Field(min_length=1, max_length=100)
    currency: str | None = Field(
        None,
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217; must be the shop's (ORDERFLOW_CURRENCY).",
    )
    payment_timeout_seconds: float | None = Field(
        default=None,
        ge=1,
        le=7 * 86_400,
        description="This order's own auto-cancel timer (default ORDERFLOW_PAYMENT_TIMEOUT_SECONDS).",
    )
    payment_retry_interval_seconds: float | None = Field(
        default=None,
        ge=1,
        le=86_400,
        description="This order's time between capture retries after a failed payment.",
    )


class PaymentFailureIn(BaseModel):
    """A capture attempt the gateway reported as failed: the order starts its retries."""

    model_config = ConfigDict(extra="forbid")
    provider: str = Field(min_length=1, max_length=32)
    payment_id: str = Field(min_length=1, max_length=255)
    reason: str = Field(min_length=1, max_length=500, description="The gateway's reason.")
    attempt_id: str = Field(
        default="", max_length=255, description="The failed attempt (Stripe: the charge)."
    )


class PaymentIn(BaseModel):
    """A payment the gateway took for the order."""

    model_config = ConfigDict(extra="forbid")
    provider: str = Field(min_length=1, max_length=32, description="`stripe`, `razorpay`, ...")
    payment_id: str = Field(min_length=1, max_length=255, description="The gateway's payment id.")
    amount: StrictInt = Field(ge=1, le=MAX_AMOUNT, description="Minor units of `currency`.")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217; must be the order's.")
    flagged: StrictBool = Field(False, description="The gateway flagged it as risky: a review.")


class CancelIn(BaseModel):
    """Why the order is cancelled."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="cancelled by customer", min_length=1, max_length=500)


class ShipmentIn(BaseModel):
    """The warehouse's shipment."""

    model_config = ConfigDict(extra="forbid")
    carrier: str = Field(default="", max_length=64)
    tracking_number: str = Field(default="", max_length=64)


class ReturnIn(BaseModel):
    """A return request for a shipped order."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


class DecisionIn(BaseModel):
    """A reviewer's decision."""

    model_config = ConfigDict(extra="forbid")
    approve: StrictBool
    reviewer: str = Field(min_length=1, max_length=128)
    note: str = Field(default="", max_length=1000)


class Accepted(BaseModel):
    """The request was taken; the order acts on it in its own time."""

    order_id: str
    status: str = Field(description="`accepted`")
    detail: str = ""


class ReturnOpened(BaseModel):
    """The review a return request opened."""

    order_id: str
    review_id: str


class CheckoutIn(BaseModel):
    """An order and how its checkout opens: the order is started if it is not running."""

    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(min_length=1, max_length=128)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    items: list[LineIn] = Field(min_length=1, max_length=100)
    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217; must be the shop's."
    )
    customer: str = Field(default="", max_length=255, description="The gateway's customer id.")
    payment_method: str = Field(
        default="", max_length=255, description="A saved payment method: confirmed at once."
    )
    capture_manually: StrictBool = Field(
        default=False, description="Authorise only; the order captures its total later."
    )


class CheckoutAnswer(BaseModel):
    """The order (waiting for payment) and the gateway's checkout for its total."""

    order: OrderState
    checkout: Checkout


def order_id_of(body: OrderCreate, idempotency_key: str | None) -> str:
    """The order's id: the body's or the `Idempotency-Key` header's, the same if both."""
    key = (idempotency_key or "").strip()
    if key and not re.fullmatch(ORDER_ID, key):
        raise ApiProblem(
            422,
            "invalid-request",
            "Invalid request",
            "Idempotency-Key: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or"
            " digit (it becomes the order id)",
            field="Idempotency-Key",
        )
    if body.order_id and key and body.order_id != key:
        raise ApiProblem(
            422,
            "invalid-request",
            "Invalid request",
            f"order_id {body.order_id} and Idempotency-Key {key} differ: give one, or both alike",
            field="order_id",
            order_id=body.order_id,
        )
    if not (order_id := body.order_id or key):
        raise ApiProblem(
            422,
            "invalid-request",
            "Invalid request",
            "an order needs its id: `order_id` in the body or an `Idempotency-Key` header",
            field="order_id",
        )
    return order_id
