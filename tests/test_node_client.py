"""The Node order client (clients/node) against the real stack: the session's Temporal dev
server, workers and Redis, and the HTTP app. Each test runs a Node process that checks what it
sends and receives against contracts/schemas/ (ajv), so a drift between the Python contracts
and what Node writes fails here."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from orderflow.contracts.mail import EMAIL_QUEUE, EmailJob
from orderflow.contracts.order import CUSTOMER_ID, order_workflow_id
from orderflow.settings import LOCAL_API_KEY, Settings
from tests.helpers import new_order_id, served_ops, wait_status

CLIENT_DIR = Path(__file__).parents[1] / "clients" / "node"
NODE_WAIT_SECONDS = 60  # a Node process that has not finished by then has hung

# the database is not what these tests are about: one backend is enough
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
Catalogue = Callable[..., dict[str, str]]


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with clients/node's packages installed (npm ci) if they are not yet."""
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node is not installed (Node 20 is needed for the Node client tests)")
    if not (CLIENT_DIR / "node_modules" / "@temporalio" / "client").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=CLIENT_DIR, check=True)
    return binary


async def scenario(node: str, name: str, **config: Any) -> Any:
    """Run one step of clients/node/test/scenario.js and parse the JSON it prints."""
    proc = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT_DIR / "test" / "scenario.js"),
        name,
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), NODE_WAIT_SECONDS)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


def temporal_door(env: WorkflowEnvironment) -> dict[str, str]:
    return {
        "door": "temporal",
        "address": env.client.service_client.config.target_host,
        "namespace": env.client.namespace,
    }


def an_order(catalogue: Catalogue, settings: Settings, **more: Any) -> dict[str, Any]:
    """A fresh order of two kites and where its confirmation mail goes."""
    skus = catalogue(kite=(45_000, 5))
    order_id = new_order_id()
    return {
        "orderId": order_id,
        "sku": skus["kite"],
        "quantity": 2,
        "email": f"{order_id}@example.com",
        "redisUrl": settings.redis_url,
        "prefix": settings.queue_prefix,
        "queue": EMAIL_QUEUE,
        **more,
    }


def assert_confirmed_and_mailed(seen: dict[str, Any], order: dict[str, Any]) -> None:
    assert seen["pending"]["total"] == 90_000 and seen["pending"]["currency"] == "INR"
    assert seen["ack"]["accepted"] is True and seen["ack"]["reason"] == "", seen["ack"]
    assert seen["confirmed"]["status"] == "CONFIRMED"
    assert seen["confirmed"]["payment_id"] == f"pi_{order['orderId']}"
    mail = seen["mail"]
    assert mail["name"] == EmailJob.ORDER_CONFIRMATION
    assert mail["data"]["to"] == order["email"]
    assert mail["data"]["data"]["orderNumber"] == order["orderId"]
    assert mail["data"]["data"]["totalMinor"] == 90_000


@on_sqlite
async def test_node_starts_an_order_through_temporal_pays_it_and_sees_it_confirmed_and_mailed(
    env: WorkflowEnvironment,
    orders: OrderClient,
    catalogue: Catalogue,
    settings: Settings,
    node: str,
) -> None:
    order = an_order(catalogue, settings)
    seen = await scenario(node, "pay", **temporal_door(env), **order)
    assert_confirmed_and_mailed(seen, order)
    state = await orders.status(order["orderId"])  # the same order, as Python reads it
    assert state.status == "CONFIRMED" and state.payment_id == f"pi_{order['orderId']}"
    described = await env.client.get_workflow_handle(order_workflow_id(order["orderId"])).describe()
    assert described.typed_search_attributes.get(CUSTOMER_ID) == order["email"]


@on_sqlite
async def test_node_does_the_same_through_the_http_api(
    orders: OrderClient,
    catalogue: Catalogue,
    settings: Settings,
    redis_url: str,
    engine: Engine,
    node: str,
) -> None:
    order = an_order(catalogue, settings)
    async with served_ops(settings, redis_url, orders, engine, "node-client") as (url, _, _):
        http = {"door": "http", "baseUrl": url, "apiKey": LOCAL_API_KEY}
        seen = await scenario(node, "pay", **http, **order)
    assert_confirmed_and_mailed(seen, order)


@on_sqlite
async def test_a_payment_from_node_with_the_wrong_total_is_refused_with_the_reason(
    env: WorkflowEnvironment,
    orders: OrderClient,
    catalogue: Catalogue,
    settings: Settings,
    node: str,
) -> None:
    order = an_order(catalogue, settings, short=1)
    seen = await scenario(node, "pay", **temporal_door(env), **order)
    ack = seen["ack"]
    assert ack["accepted"] is False and ack["status"] == "PENDING_PAYMENT", ack
    assert "899.99" in ack["reason"] and "900.00" in ack["reason"], ack["reason"]
    assert seen["after"]["status"] == "PENDING_PAYMENT"
    assert (await orders.status(order["orderId"])).payment_id == ""


@on_sqlite
async def test_an_order_node_started_and_python_cancelled_is_cancelled_for_node(
    env: WorkflowEnvironment,
    orders: OrderClient,
    catalogue: Catalogue,
    settings: Settings,
    node: str,
) -> None:
    order = an_order(catalogue, settings)
    door = temporal_door(env)
    started = await scenario(node, "start", **door, **order)
    assert started["pending"]["status"] == "PENDING_PAYMENT"
    await orders.cancel(order["orderId"], "out of stock at the warehouse")
    seen = await scenario(node, "wait-status", **door, **order, status="CANCELLED")
    assert seen["state"]["status"] == "CANCELLED"
    assert any("out of stock" in change["note"] for change in seen["state"]["history"])
    await wait_status(orders, order["orderId"], "CANCELLED")


async def test_node_refuses_what_breaks_the_contract_before_sending_it(node: str) -> None:
    seen = await scenario(node, "refuse", orderId=new_order_id())
    assert seen["sent"] == 0
    refused = seen["refused"]
    assert refused["misspeltLine"]["type"] == "OrderInput"
    assert "/items/0 must have required property 'quantity'" in refused["misspeltLine"]["message"]
    assert "/amount must be integer" in refused["moneyAsText"]["message"]
    assert "additional properties (paymentId)" in refused["camelCase"]["message"]
