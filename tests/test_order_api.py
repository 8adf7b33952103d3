"""The HTTP order API (`/api/v1`, issue 20) on the real stack: the Temporal dev server, the
session's workers, Redis and both databases. An order service in any language starts, pays,
cancels, ships and returns orders through it; every error is problem+json naming the field."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from bullmq import Queue
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from temporalio.client import Client
from typer.testing import CliRunner

from app import embedded
from app.cli import app as cli
from app.client import OrderClient
from app.telemetry import Telemetry
from app.web import orders_api
from app.web.app import create_app
from orderflow.settings import LOCAL_API_KEY, Settings
from tests.helpers import eventually, wait_status

Catalogue = Callable[..., dict[str, str]]
KEY = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
PROBLEM = "application/problem+json"


@pytest.fixture
async def api(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    queue = Queue(f"api-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    app = create_app(settings, queue, orders=orders, engine=engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop", headers=KEY) as http:
        yield http
    await queue.obliterate(force=True)
    await queue.close()


def new_id() -> str:
    return f"api-{uuid.uuid4().hex[:10]}"


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM, answer.headers
    body: dict[str, Any] = answer.json()
    assert body["status"] == status and body["type"].startswith("/api/v1/problems#")
    return body


async def test_an_order_started_again_is_the_same_order_and_its_id_for_another_is_refused(
    api: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    skus = catalogue(kite=(45_000, 5), reel=(9_900, 5))
    order_id = new_id()
    body = {
        "customer_id": "c-7",
        "email": "meera@example.com",
        "items": [{"sku": skus["kite"], "quantity": 1}, {"sku": skus["reel"], "quantity": 2}],
    }
    first = await api.post("/api/v1/orders", json=body, headers={"Idempotency-Key": order_id})
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"/api/v1/orders/{order_id}"
    again = await api.post("/api/v1/orders", json={**body, "order_id": order_id})
    assert again.status_code == 200, again.text
    assert again.json()["order_id"] == order_id
    other = {**body, "items": [{"sku": skus["kite"], "quantity": 3}]}
    refused = problem(
        await api.post("/api/v1/orders", json=other, headers={"Idempotency-Key": order_id}), 409
    )
    assert refused["order_id"] == order_id and refused["field"] == "items"
    assert "started with another items" in refused["detail"]


async def test_an_order_started_with_prefer_minimal_is_answered_at_once_and_compared_again(
    api: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    skus = catalogue(kite=(45_000, 5))
    order_id = new_id()
    body = {
        "order_id": order_id,
        "customer_id": "c-8",
        "email": "ravi@example.com",
        "items": [{"sku": skus["kite"], "quantity": 2}],
    }
    minimal = {"Prefer": "respond-async, return=minimal"}
    first = await api.post("/api/v1/orders", json=body, headers=minimal)
    assert first.status_code == 202, first.text
    assert first.headers["preference-applied"] == "return=minimal"
    assert first.headers["location"] == f"/api/v1/orders/{order_id}"
    assert first.json()["order_id"] == order_id

    async def reserved() -> dict[str, Any] | None:
        state: dict[str, Any] = (await api.get(f"/api/v1/orders/{order_id}")).json()
        return state if state["status"] == "PENDING_PAYMENT" else None

    state = await eventually(reserved, 20, f"order {order_id} PENDING_PAYMENT")
    assert (state["total"], state["currency"]) == (90_000, "INR")
    again = await api.post("/api/v1/orders", json=body, headers=minimal)
    assert again.status_code == 200 and again.json()["status"] == "PENDING_PAYMENT", again.text
    other = {**body, "items": [{"sku": skus["kite"], "quantity": 1}]}
    refused = problem(await api.post("/api/v1/orders", json=other, headers=minimal), 409)
    assert refused["field"] == "items" and refused["order_id"] == order_id


@pytest.mark.parametrize(
    ("prefer", "minimal"),
    [(None, False), ("return=minimal", True), ("Return = Minimal; x=1", True),
     ("handling=lenient, return=minimal", True), ("return=representation", False),
     ("return=minimalist", False)],
)  # fmt: skip
def test_the_prefer_header_is_read_as_rfc_7240_writes_it(prefer: str | None, minimal: bool) -> None:
    assert orders_api.wants_minimal(prefer) is minimal


async def test_an_order_paid_over_http_is_confirmed_in_the_same_call_and_a_wrong_total_refused(
    api: httpx.AsyncClient, catalogue: Catalogue, orders: OrderClient
) -> None:
    skus = catalogue(kite=(45_000, 5))
    order_id = new_id()
    body = {
        "order_id": order_id,
        "customer_id": "c-8",
        "email": "ravi@example.com",
        "items": [{"sku": skus["kite"], "quantity": 2}],
        "currency": "INR",
    }
    assert (await api.post("/api/v1/orders", json=body)).status_code == 201

    async def pending() -> dict[str, Any] | None:
        state: dict[str, Any] = (await api.get(f"/api/v1/orders/{order_id}")).json()
        return state if state["status"] == "PENDING_PAYMENT" else None

    state = await eventually(pending, 20, "the order waiting for payment")
    assert state["total"] == 90_000 and state["currency"] == "INR"
    short = {"provider": "stripe", "payment_id": "pi_short", "amount": 89_999, "currency": "INR"}
    answer = await api.post(f"/api/v1/orders/{order_id}/payments", json=short)
    assert answer.status_code == 200 and answer.json()["accepted"] is False, answer.text
    assert "900.00" in answer.json()["reason"] or "90,000" in answer.json()["reason"]
    paid = {"provider": "stripe", "payment_id": "pi_whole", "amount": 90_000, "currency": "INR"}
    answer = await api.post(f"/api/v1/orders/{order_id}/payments", json=paid)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] is True
    assert (await orders.status(order_id)).payment_id == "pi_whole"
    again = await api.post(f"/api/v1/orders/{order_id}/payments", json=paid)
    assert again.json()["accepted"] is True  # the same payment reported twice: the same answer


async def test_an_order_cancelled_over_http_ends_cancelled(
    api: httpx.AsyncClient, catalogue: Catalogue, orders: OrderClient
) -> None:
    skus = catalogue(cap=(1_250, 5))
    order_id = new_id()
    body = {
        "order_id": order_id,
        "customer_id": "c-9",
        "email": "asha@example.com",
        "items": [{"sku": skus["cap"], "quantity": 1}],
    }
    assert (await api.post("/api/v1/orders", json=body)).status_code == 201
    await wait_status(orders, order_id, "PENDING_PAYMENT")
    answer = await api.post(f"/api/v1/orders/{order_id}/cancel", json={"reason": "changed mind"})
    assert answer.status_code == 202, answer.text
    state = await wait_status(orders, order_id, "CANCELLED")
    assert any("changed mind" in change.note for change in state.history)
    closed = problem(await api.post(f"/api/v1/orders/{order_id}/cancel"), 409)
    assert closed["order_id"] == order_id


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"items": [{"sku": "X", "quantity": 0}]}, "items[0].quantity"),
        ({"items": [{"sku": "X", "quantity": "2"}]}, "items[0].quantity"),
        ({"items": []}, "items"),
        ({"email": "not-an-address"}, "email"),
        ({"currency": "usd"}, "currency"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_a_malformed_order_gets_a_problem_naming_the_field_and_starts_nothing(
    api: httpx.AsyncClient, orders: OrderClient, change: dict[str, Any], field: str
) -> None:
    order_id = new_id()
    body = {
        "order_id": order_id,
        "customer_id": "c-1",
        "email": "a@example.com",
        "items": [{"sku": "X", "quantity": 1}],
        **change,
    }
    found = problem(await api.post("/api/v1/orders", json=body), 422)
    assert found["field"] == field and found["order_id"] == order_id, found
    assert field in found["detail"]
    problem(await api.get(f"/api/v1/orders/{order_id}"), 404)  # nothing was started


async def test_an_unknown_sku_a_foreign_currency_and_a_missing_id_are_named(
    api: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    skus = catalogue(kite=(45_000, 5))
    order_id = new_id()
    body = {
        "order_id": order_id,
        "customer_id": "c-1",
        "email": "a@example.com",
        "items": [{"sku": skus["kite"], "quantity": 1}, {"sku": "NO-SUCH-SKU", "quantity": 1}],
    }
    unknown = problem(await api.post("/api/v1/orders", json=body), 422)
    assert unknown["field"] == "items[1].sku" and "NO-SUCH-SKU" in unknown["detail"]
    foreign = {**body, "items": body["items"][:1], "currency": "USD"}
    wrong = problem(await api.post("/api/v1/orders", json=foreign), 422)
    assert wrong["field"] == "currency" and "INR" in wrong["detail"]
    unnamed = {k: v for k, v in body.items() if k != "order_id"}
    missing = problem(await api.post("/api/v1/orders", json=unnamed), 422)
    assert missing["field"] == "order_id"
    problem(await api.get(f"/api/v1/orders/{order_id}"), 404)


async def test_the_catalogue_check_does_not_queue_behind_a_worker_writing_the_database(
    api: httpx.AsyncClient, catalogue: Catalogue, engine: Engine
) -> None:
    """On SQLite a write transaction holds the write lock; checking the SKUs only reads."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL readers never wait for the write lock")
    skus = catalogue(kite=(45_000, 5))
    body = {
        "order_id": new_id(),
        "customer_id": "c-1",
        "email": "a@example.com",
        "items": [{"sku": skus["kite"], "quantity": 1}, {"sku": "NO-SUCH-SKU", "quantity": 1}],
    }
    with engine.connect() as writer, writer.begin():  # BEGIN IMMEDIATE: the write lock, held
        answer = await asyncio.wait_for(api.post("/api/v1/orders", json=body), 10)
    assert problem(answer, 422)["field"] == "items[1].sku"


async def test_a_sku_added_after_an_order_was_refused_for_it_is_found_at_once(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    """The API trusts a SKU it found for a few seconds, never one it did not find."""
    from sqlmodel import Session

    from orderflow.db import Product

    sku = f"NEW-{uuid.uuid4().hex[:6]}"
    body = {"customer_id": "c-1", "email": "a@example.com", "items": [{"sku": sku, "quantity": 1}]}
    refused = problem(await api.post("/api/v1/orders", json={**body, "order_id": new_id()}), 422)
    assert refused["field"] == "items[0].sku"
    with Session(engine) as session:
        session.add(Product(sku=sku, name="new", price=12_000, on_hand=3))
        session.commit()
    again = await api.post("/api/v1/orders", json={**body, "order_id": new_id()})
    assert again.status_code == 201, again.text
    assert again.json()["status"] == "PENDING_PAYMENT"


@pytest.mark.parametrize(
    "amount",
    ["90000", 900.5, 0, -1, 10**16, True],
    ids=["text", "float", "zero", "negative", "huge", "bool"],
)
async def test_a_payment_amount_that_is_not_a_whole_positive_minor_unit_count_is_refused(
    api: httpx.AsyncClient, amount: Any
) -> None:
    order_id = new_id()
    payment = {"provider": "stripe", "payment_id": "pi_1", "amount": amount, "currency": "INR"}
    found = problem(await api.post(f"/api/v1/orders/{order_id}/payments", json=payment), 422)
    assert found["field"] == "amount" and found["order_id"] == order_id


async def test_an_unknown_order_is_a_404_naming_it(api: httpx.AsyncClient) -> None:
    found = problem(await api.get("/api/v1/orders/api-nobody"), 404)
    assert found["order_id"] == "api-nobody" and "api-nobody" in found["detail"]
    paid = {"provider": "stripe", "payment_id": "pi_1", "amount": 100, "currency": "INR"}
    problem(await api.post("/api/v1/orders/api-nobody/payments", json=paid), 404)


async def test_no_key_a_wrong_key_or_the_dashboards_credentials_get_401(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer of_wrong_key"}):
        answer = await api.get("/api/v1/reviews", headers=headers)
        found = problem(answer, 401)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "of_wrong_key" not in found["detail"]
    basic = await api.get(
        "/api/v1/reviews",
        headers={"Authorization": ""},
        auth=(settings.admin_user, settings.admin_password),
    )
    problem(basic, 401)
    assert (await api.get("/api/v1/reviews")).status_code == 200


async def test_a_rotated_key_works_beside_the_old_and_a_key_over_its_budget_waits(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine
) -> None:
    old_key, new_key = f"of_{uuid.uuid4().hex}", f"of_{uuid.uuid4().hex}"
    both = ",".join(hashlib.sha256(k.encode()).hexdigest() for k in (old_key, new_key))
    local = settings.model_copy(update={"api_key_hashes": both, "api_rate_limit": 3})
    queue = Queue(f"api-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    app = create_app(local, queue, orders=orders, engine=engine)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            rotated = {"Authorization": f"Bearer {new_key}"}
            answers = [await http.get("/api/v1/reviews", headers=rotated) for _ in range(4)]
            assert [a.status_code for a in answers[:3]] == [200, 200, 200]
            limited = problem(answers[3], 429)
            assert int(answers[3].headers["retry-after"]) >= 1 and "retry in" in limited["detail"]
            # the budget is the key's: the old key still has its own
            old = {"Authorization": f"Bearer {old_key}"}
            assert (await http.get("/api/v1/reviews", headers=old)).status_code == 200
            # and the local key is not one of this app's keys any more
            problem(await http.get("/api/v1/reviews", headers=KEY), 401)
    finally:
        await queue.obliterate(force=True)
        await queue.close()


async def test_the_openapi_document_is_valid_and_describes_every_route_error_and_the_auth(
    api: httpx.AsyncClient,
) -> None:
    answer = await api.get("/api/v1/openapi.json", headers={"Authorization": ""})
    assert answer.status_code == 200
    document = answer.json()
    validate(document)  # openapi-spec-validator: the OpenAPI 3.1 schema
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    api_paths = [p for p in document["paths"] if p.startswith("/api/v1/")]
    assert len(api_paths) == 10  # orders, checkout, one order, payments, payment-failures,
    # cancel, shipment, returns, reviews, a decision
    for path in api_paths:
        for method, operation in document["paths"][path].items():
            answers = operation["responses"]
            for code in ("401", "422", "429", "503"):
                assert code in answers, (method, path, code)
                assert answers[code]["content"].keys() == {PROBLEM}, (method, path, code)
    assert not any(p.startswith("/ops") for p in document["paths"])
    for path in ("/webhooks/stripe", "/webhooks/razorpay"):
        assert document["paths"][path]["post"]["tags"] == ["webhooks"]


async def test_a_key_made_by_the_cli_opens_the_api_once_its_digest_is_configured(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine
) -> None:
    made = CliRunner().invoke(cli, ["api-keys", "new"])
    assert made.exit_code == 0, made.output
    key = re.search(r"^key:\s+(\S+)$", made.output, re.M)
    digest = re.search(r"^digest:\s+([0-9a-f]{64})$", made.output, re.M)
    assert key and digest and hashlib.sha256(key[1].encode()).hexdigest() == digest[1]
    hashed = CliRunner().invoke(cli, ["api-keys", "hash"], input=f"{key[1]}\n")
    assert hashed.exit_code == 0 and hashed.output.strip() == digest[1]
    local = settings.model_copy(update={"api_key_hashes": digest[1]})
    queue = Queue(f"api-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    app = create_app(local, queue, orders=orders, engine=engine)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop"
        ) as http:
            opened = await http.get(
                "/api/v1/reviews", headers={"Authorization": f"Bearer {key[1]}"}
            )
            assert opened.status_code == 200, opened.text
    finally:
        await queue.obliterate(force=True)
        await queue.close()


async def test_with_temporal_stopped_the_api_answers_503_with_retry_after_naming_the_order(
    settings: Settings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orders_api, "BACKEND_WAIT_SECONDS", 3.0)  # not the 15 s of production
    port = embedded.free_port()
    server = embedded.start_temporal(port=port, ui_port=None, db_file=None, log=tmp_path / "t.log")
    try:
        client = await Client.connect(f"127.0.0.1:{port}")
        local = OrderClient(client, settings)
    finally:
        embedded.stop(server)
    queue = Queue(f"api-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    app = create_app(settings, queue, orders=local)
    order_id = new_id()
    body = {
        "order_id": order_id,
        "customer_id": "c-1",
        "email": "a@example.com",
        "items": [{"sku": "X", "quantity": 1}],
    }
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop", headers=KEY
        ) as http:
            for answer in (
                await http.post("/api/v1/orders", json=body),
                await http.get(f"/api/v1/orders/{order_id}"),
            ):
                down = problem(answer, 503)
                assert answer.headers["retry-after"] == "5"
                assert down["order_id"] == order_id and "order" in down["detail"]
    finally:
        await queue.obliterate(force=True)
        await queue.close()


def api_requests(text: str, route: str, code: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "orderflow_api_requests_total"
        and s.labels.get("route") == route
        and s.labels.get("code") == code
    )


async def test_the_api_answers_are_counted_on_metrics_by_route_template_and_code(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine, telemetry: Telemetry
) -> None:
    fresh = settings.model_copy(update={"metrics_cache_seconds": 0})
    queue = Queue(f"api-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    app = create_app(fresh, queue, orders=orders, engine=engine, telemetry=telemetry)
    route = "/api/v1/orders/{order_id}"
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop", headers=KEY
        ) as http:
            before = (await http.get("/metrics")).text
            for _ in range(2):
                problem(await http.get(f"/api/v1/orders/{new_id()}"), 404)
            problem(await http.get("/api/v1/reviews", headers={"Authorization": ""}), 401)
            after = (await http.get("/metrics")).text
    finally:
        await queue.obliterate(force=True)
        await queue.close()
    assert api_requests(after, route, "404") - api_requests(before, route, "404") == 2
    reviews = "/api/v1/reviews"
    assert api_requests(after, reviews, "401") - api_requests(before, reviews, "401") == 1


async def test_ops_names_the_order_api_and_how_many_keys_open_it(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine
) -> None:
    keys = ",".join(hashlib.sha256(f"of_{n}".encode()).hexdigest() for n in range(2))
    local = settings.model_copy(update={"api_key_hashes": keys})
    queue = Queue(f"api-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    app = create_app(local, queue, orders=orders, engine=engine)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop"
        ) as http:
            ops = await http.get("/ops", auth=(local.admin_user, local.admin_password))
    finally:
        await queue.obliterate(force=True)
        await queue.close()
    assert ops.status_code == 200
    [line] = re.findall(r'<span id="order-api">(.*?)</span>', ops.text)
    assert '<a href="/api/v1/openapi.json">/api/v1</a>, 2 keys' in line
    assert keys.split(",")[0] not in ops.text  # the digests are not shown
