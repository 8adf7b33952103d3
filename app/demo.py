"""`orderflow demo`: four orders against the running system, each to its final status."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import typer
from pydantic import TypeAdapter

from app.client import OrderClient, policy_from_settings
from app.temporal import connect
from orderflow.contracts.order import (
    OrderPolicy,
    OrderState,
    OrderStatus,
    PaymentFailed,
    PaymentReceived,
)
from orderflow.contracts.review import ReviewDecision
from orderflow.db import make_engine
from orderflow.errors import OrderflowError
from orderflow.money import format_money
from orderflow.settings import LOCAL_API_KEY, Settings
from payments.gateway import SimulatedGateway

EXPIRY_SECONDS = 5.0  # the expired order's own payment timeout, so the demo ends quickly
RETRY_INTERVAL_SECONDS = 3.0  # the retried order's own capture interval, instead of an hour
ORDER_STATE = TypeAdapter(OrderState)  # the API's JSON back into the contract


async def _until(
    orders: Any, order_id: str, statuses: set[OrderStatus], timeout: float = 60.0
) -> OrderState:
    deadline = time.monotonic() + timeout
    while True:
        state = await orders.status(order_id)
        if state.status in statuses:
            return state
        if time.monotonic() > deadline:
            raise OrderflowError(
                f"order {order_id} stayed {state.status}; wanted {sorted(statuses)}"
            )
        await asyncio.sleep(0.2)


class HttpOrders:
    """The demo's calls through the HTTP order API (`/api/v1`), as an order service makes them."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )

    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = await self.http.request(method, f"/api/v1{path}", json=body)
        if answer.status_code >= 400:
            problem = answer.json() if answer.content else {}
            raise OrderflowError(
                f"{method} /api/v1{path}: {answer.status_code} {problem.get('detail', answer.text)}"
            )
        return answer.json()

    async def start_order(
        self,
        order_id: str,
        customer_id: str,
        email: str,
        items: list[tuple[str, int]],
        *,
        payment_timeout_seconds: float | None = None,
        policy: OrderPolicy | None = None,
    ) -> None:
        """`POST /api/v1/orders`."""
        body: dict[str, Any] = {
            "order_id": order_id,
            "customer_id": customer_id,
            "email": email,
            "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items],
            "payment_timeout_seconds": payment_timeout_seconds,
        }
        if policy is not None:
            body["payment_retry_interval_seconds"] = policy.payment_retry_interval_seconds
        await self._send("POST", "/orders", body)

    async def status(self, order_id: str) -> OrderState:
        """`GET /api/v1/orders/{id}`."""
        return ORDER_STATE.validate_python(await self._send("GET", f"/orders/{order_id}"))

    async def payment_received(self, order_id: str, payment: PaymentReceived) -> None:
        """`POST /api/v1/orders/{id}/payments`."""
        body = {
            "provider": payment.provider,
            "payment_id": payment.payment_id,
            "amount": payment.amount,
            "currency": payment.currency,
        }
        await self._send("POST", f"/orders/{order_id}/payments", body)

    async def payment_failed(self, order_id: str, failure: PaymentFailed) -> None:
        """`POST /api/v1/orders/{id}/payment-failures`."""
        body = {
            "provider": failure.provider,
            "payment_id": failure.payment_id,
            "reason": failure.reason,
        }
        await self._send("POST", f"/orders/{order_id}/payment-failures", body)

    async def decide_review(self, review_id: str, decision: ReviewDecision) -> None:
        """`POST /api/v1/reviews/{id}/decision`."""
        body = {"approve": decision.approve, "reviewer": decision.reviewer, "note": decision.note}
        await self._send("POST", f"/reviews/{review_id}/decision", body)


async def run_demo(via: str = "client", api_key: str = LOCAL_API_KEY) -> None:
    """Run the four scenarios at once and print each final status.

    Args:
        via: `client` (Python's OrderClient on Temporal) or `http` (the order API of the
            running HTTP app, at ORDERFLOW_HTTP_HOST:ORDERFLOW_HTTP_PORT).
        api_key: the order API's bearer key, for `http`.
    """
    settings = Settings.from_env()
    engine = make_engine(settings.db_url)
    orders: Any
    if via == "http":
        orders = HttpOrders(f"http://{settings.http_host}:{settings.http_port}", api_key)
    elif via == "client":
        orders = OrderClient(await connect(settings), settings, engine)
    else:
        raise OrderflowError(f"demo --via {via!r}: choose client or http")
    tag = uuid.uuid4().hex[:6]

    async def paid() -> OrderState:
        oid = f"demo-paid-{tag}"
        await orders.start_order(oid, "demo", "demo@example.com", [("TSHIRT-M", 2), ("MUG-01", 1)])
        state = await _until(orders, oid, {OrderStatus.PENDING_PAYMENT})
        await orders.payment_received(
            oid,
            PaymentReceived(payment_id=f"pay-{oid}", amount=state.total, currency=state.currency),
        )
        return await _until(orders, oid, {OrderStatus.CONFIRMED})

    async def expired() -> OrderState:
        oid = f"demo-expired-{tag}"
        await orders.start_order(
            oid, "demo", "demo@example.com", [("MUG-01", 1)], payment_timeout_seconds=EXPIRY_SECONDS
        )
        return await _until(orders, oid, {OrderStatus.CANCELLED}, timeout=EXPIRY_SECONDS + 30)

    async def high_value() -> OrderState:
        oid = f"demo-review-{tag}"
        await orders.start_order(oid, "demo", "demo@example.com", [("LAPTOP-PRO", 1)])
        state = await _until(orders, oid, {OrderStatus.PENDING_PAYMENT})
        await orders.payment_received(
            oid,
            PaymentReceived(payment_id=f"pay-{oid}", amount=state.total, currency=state.currency),
        )
        state = await _until(orders, oid, {OrderStatus.IN_REVIEW})
        await orders.decide_review(
            state.review_id, ReviewDecision(approve=True, reviewer="demo-admin", note="looks fine")
        )
        return await _until(orders, oid, {OrderStatus.CONFIRMED})

    async def retried() -> OrderState:
        oid = f"demo-retry-{tag}"
        SimulatedGateway(engine).set_rule(oid, fail_captures=1)
        policy = policy_from_settings(settings)
        policy.payment_retry_interval_seconds = RETRY_INTERVAL_SECONDS
        await orders.start_order(
            oid, "demo", "demo@example.com", [("HEADPHONES", 1)], policy=policy
        )
        await _until(orders, oid, {OrderStatus.PENDING_PAYMENT})
        await orders.payment_failed(
            oid, PaymentFailed(payment_id=f"fail-{oid}", reason="card declined")
        )
        return await _until(orders, oid, {OrderStatus.CONFIRMED})

    scenarios = {
        "paid": paid,
        "expired": expired,
        "high-value approved": high_value,
        "capture retried": retried,
    }
    results = await asyncio.gather(*(fn() for fn in scenarios.values()), return_exceptions=True)
    if not _report(list(scenarios), results):
        raise typer.Exit(1)


def _report(names: list[str], results: list[OrderState | BaseException]) -> bool:
    """Print each scenario's final status and history; False if any failed."""
    failed = False
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            failed = True
            typer.echo(f"{name:<20} FAILED: {result}")
        else:
            money = format_money(result.total, result.currency)
            typer.echo(f"{name:<20} {result.order_id:<24} {result.status:<10} {money:>14}")
            typer.echo(f"{'':<20} history: " + " → ".join(h.status for h in result.history))
    return not failed
