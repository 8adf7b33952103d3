"""Checkout in one call (issue 20): the order's start and the wait for its stock reservation go
to Temporal together (update-with-start), and the gateway's checkout comes back in the same
answer, for exactly the order's total. On the real dev server, workers and the simulated gateway."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from bullmq import Queue
from sqlalchemy.engine import Engine

from app.client import OrderClient
from app.web.app import create_app
from orderflow.contracts.order import PaymentReceived
from orderflow.errors import OrderClosedError
from orderflow.settings import LOCAL_API_KEY, Settings
from tests.helpers import wait_status

Catalogue = Callable[..., dict[str, str]]


def new_id() -> str:
    return f"co-{uuid.uuid4().hex[:10]}"


async def test_a_checkout_starts_the_order_and_opens_the_gateway_for_its_total_at_once(
    orders: OrderClient, catalogue: Catalogue
) -> None:
    skus = catalogue(kite=(45_000, 5), reel=(9_900, 5))
    order_id = new_id()
    lines = [(skus["kite"], 1), (skus["reel"], 2)]
    state, checkout = await orders.checkout(order_id, "c-1", "meera@example.com", lines)
    assert state.status == "PENDING_PAYMENT" and state.total == 64_800
    assert (checkout.amount, checkout.currency) == (64_800, "INR")
    assert checkout.provider == "simulated" and checkout.payment_id
    again, _ = await orders.checkout(order_id, "c-1", "meera@example.com", lines)
    assert again.history[0].at == state.history[0].at  # the same run, not a second order
    payment = PaymentReceived(payment_id=checkout.payment_id, amount=64_800, currency="INR")
    ack = await orders.payment_received(order_id, payment)
    assert ack.accepted, ack
    await wait_status(orders, order_id, "CONFIRMED")


async def test_a_checkout_of_an_order_without_stock_is_refused_naming_the_rejection(
    orders: OrderClient, catalogue: Catalogue
) -> None:
    skus = catalogue(kite=(45_000, 1))
    order_id = new_id()
    with pytest.raises(OrderClosedError, match=f"{order_id}.*REJECTED"):
        await orders.checkout(order_id, "c-1", "ravi@example.com", [(skus["kite"], 3)])


@pytest.fixture
async def api(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    queue = Queue(f"co-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    app = create_app(settings, queue, orders=orders, engine=engine)
    headers = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop", headers=headers) as h:
        yield h
    await queue.obliterate(force=True)
    await queue.close()


async def test_the_api_checkout_answers_the_order_and_the_checkout_in_one_request(
    api: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    skus = catalogue(cap=(1_250, 5))
    order_id = new_id()
    body: dict[str, Any] = {
        "customer_id": "c-2",
        "email": "asha@example.com",
        "items": [{"sku": skus["cap"], "quantity": 4}],
    }
    answer = await api.post(f"/api/v1/orders/{order_id}/checkout", json=body)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["order"]["order_id"] == order_id and found["order"]["status"] == "PENDING_PAYMENT"
    assert found["checkout"]["amount"] == 5_000 and found["checkout"]["currency"] == "INR"
    assert (await api.get(f"/api/v1/orders/{order_id}")).json()["total"] == 5_000
    sold_out = {**body, "items": [{"sku": skus["cap"], "quantity": 9}]}
    refused = await api.post(f"/api/v1/orders/{new_id()}/checkout", json=sold_out)
    assert refused.status_code == 409, refused.text
    assert "REJECTED" in refused.json()["detail"]
    unknown = {**body, "items": [{"sku": "NO-SUCH", "quantity": 1}]}
    bad = await api.post(f"/api/v1/orders/{new_id()}/checkout", json=unknown)
    assert bad.status_code == 422 and bad.json()["field"] == "items[0].sku"
