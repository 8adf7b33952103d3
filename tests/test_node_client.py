"""The Node order client (clients/node) against the real stack: the session's Temporal dev
server, workers and Redis, and the HTTP app. Each test runs a Node process that checks what it
sends and receives against contracts/schemas/ (ajv), so a drift between the Python contracts
and what Node writes fails here. Node encrypts what it sends to Temporal with the Python codec's
format and key (clients/node/codec.js, orderflow/codec.py): each side opens what the other
sealed, on the stack and in `node --test test/codec.test.js` on vectors Python writes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from orderflow import codec
from orderflow.contracts.mail import EMAIL_QUEUE, EmailJob
from orderflow.contracts.order import CUSTOMER_ID, order_workflow_id
from orderflow.settings import LOCAL_API_KEY, Settings
from tests import node_codec_vectors as vectors
from tests.helpers import new_order_id, served_ops, wait_status
from tests.temporal_env import TEST_CODEC_KEY

CLIENT_DIR = Path(__file__).parents[1] / "clients" / "node"
NODE_WAIT_SECONDS = 60  # a Node process that has not finished by then has hung

# the database is not what these tests are about: one backend is enough
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
Catalogue = Callable[..., dict[str, str]]
SDK_MARKER_DATA = re.compile(r"\.marker_recorded_event_attributes\.details\[(data|patch-data)\]")


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with clients/node's packages installed (npm ci) if they are not yet."""
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node is not installed (Node 20 is needed for the Node client tests)")
    if not (CLIENT_DIR / "node_modules" / "@temporalio" / "client").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=CLIENT_DIR, check=True)
    return binary


def node_env(**overrides: str) -> dict[str, str]:
    """The environment of a Node process: the workers' codec key (the suite's), no old keys."""
    base = {"ORDERFLOW_CODEC_KEY": TEST_CODEC_KEY.spec(), "ORDERFLOW_CODEC_OLD_KEYS": ""}
    return {**os.environ, **base, **overrides}


async def run_node(node: str, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run node with `args`; its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        node,
        *args,
        cwd=CLIENT_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), NODE_WAIT_SECONDS)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def scenario(node: str, name: str, env: dict[str, str] | None = None, **config: Any) -> Any:
    """Run one step of clients/node/test/scenario.js and parse the JSON it prints."""
    args = (str(CLIENT_DIR / "test" / "scenario.js"), name, json.dumps(config))
    code, out, err = await run_node(node, *args, env=env or node_env())
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


async def failing_scenario(node: str, name: str, env: dict[str, str], **config: Any) -> str:
    """Run a step that must fail; what it printed on stderr."""
    args = (str(CLIENT_DIR / "test" / "scenario.js"), name, json.dumps(config))
    code, out, err = await run_node(node, *args, env=env)
    assert code != 0, out
    return err


def payloads_in(message: Message, path: str = "") -> list[tuple[str, Payload]]:
    """Every Payload in a protobuf message, with its field path (search attributes are indexed
    in clear by design: not walked)."""
    if isinstance(message, Payload):
        return [(path, message)]
    found: list[tuple[str, Payload]] = []
    for field, value in message.ListFields():
        if field.message_type is None or field.name == "search_attributes":
            continue
        where = f"{path}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            items = [(f"{where}[{k}]", v) for k, v in value.items() if isinstance(v, Message)]
        elif field.is_repeated:
            items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(where, value)]
        for at, item in items:
            found += payloads_in(item, at)
    return found


async def raw_history_payloads(
    env: WorkflowEnvironment, order_id: str
) -> list[tuple[str, Payload]]:
    """The order's history as the server keeps it (no codec applied), every payload in it."""
    history = await env.client.get_workflow_handle(order_workflow_id(order_id)).fetch_history()
    found: list[tuple[str, Payload]] = []
    for event in history.events:
        found += payloads_in(event, str(event.event_id))
    return found


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
    node_secret = "node-side-customer-hash-secret"
    env_ = node_env(ORDERFLOW_CUSTOMER_HASH_SECRET=node_secret)
    seen = await scenario(node, "pay", env_, **temporal_door(env), **order)
    assert_confirmed_and_mailed(seen, order)
    state = await orders.status(order["orderId"])  # the same order, as Python reads it
    assert state.status == "CONFIRMED" and state.payment_id == f"pi_{order['orderId']}"
    described = await env.client.get_workflow_handle(order_workflow_id(order["orderId"])).describe()
    # the keyed hash of the customer (the email here) with Node's secret: the index holds no email
    expected = codec.customer_hash(order["email"], node_secret)
    assert described.typed_search_attributes.get(CUSTOMER_ID) == expected
    assert expected != codec.customer_hash(order["email"], settings.customer_hash_secret)
    await assert_history_sealed(env, order, "workflow_execution_update_accepted")


async def assert_history_sealed(
    env: WorkflowEnvironment, order: dict[str, Any], *seen: str
) -> None:
    """Every payload of the order's stored history (Node's input, the workers' results, the
    events `seen` names) is encrypted under the suite's key, and the email is nowhere in it."""
    found = await raw_history_payloads(env, order["orderId"])
    for kind in ("workflow_execution_started", "marker_recorded", *seen):
        assert any(f".{kind}_event_attributes." in path for path, _ in found), (kind, found)
    # the SDK's own marker fields (a local activity's id, type and times; a patch's id) are not
    # user data and no codec sees them
    sealed = [(p, x) for p, x in found if not SDK_MARKER_DATA.search(p)]
    clear = [p for p, payload in sealed if payload.metadata.get("encoding") != codec.ENCODING]
    assert not clear and len(sealed) >= 5, (clear, sealed)
    key_ids = {payload.metadata[codec.KEY_ID_METADATA] for _, payload in sealed}
    assert key_ids == {TEST_CODEC_KEY.key_id.encode()}
    history = await env.client.get_workflow_handle(
        order_workflow_id(order["orderId"])
    ).fetch_history()
    assert order["email"].encode() not in b"".join(e.SerializeToString() for e in history.events)


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
    # the ended workflow's result and its whole stored history: Node's start, Python's signal
    result = await asyncio.wait_for(orders.result(order["orderId"]), NODE_WAIT_SECONDS)
    assert result.status == "CANCELLED" and result.total == 90_000
    await assert_history_sealed(env, order, "workflow_execution_signaled")


@on_sqlite
async def test_an_order_python_started_is_read_by_node_through_the_codec_and_not_without_its_key(
    env: WorkflowEnvironment,
    orders: OrderClient,
    catalogue: Catalogue,
    settings: Settings,
    node: str,
) -> None:
    order = an_order(catalogue, settings)
    await orders.start_order(
        order["orderId"], "cust-py", order["email"], [(order["sku"], order["quantity"])]
    )
    door = temporal_door(env)
    seen = await scenario(node, "wait-status", **door, **order, status="PENDING_PAYMENT")
    assert seen["state"]["status"] == "PENDING_PAYMENT" and seen["state"]["total"] == 90_000
    # a payment Python cannot read (past Node's contract check): Python's failure, whose message
    # travels as an encrypted encoded attribute, reaches Node in words
    bad = await scenario(node, "raw-update", **door, **order, update="pay", args=[{"amount": "x"}])
    cause = bad["error"]["cause"]
    assert cause["message"] == "Failed decoding arguments", bad  # not "Encoded failure"
    assert "_workflow_instance.py" in cause["stack"], bad  # Python's stack trace, also sealed
    # the same failure as a client without the codec gets it: its words are not on the wire
    bare = await Client.connect(door["address"], namespace=door["namespace"])
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await bare.get_workflow_handle(order_workflow_id(order["orderId"])).execute_update(
            "pay", {"amount": "x"}
        )
    assert str(failed.value.cause).endswith("Encoded failure")
    assert "decoding" not in str(failed.value.cause)
    # Node with the key only as an old one still reads it; with another key alone it is told
    # which key it lacks (and never shown a key)
    other = codec.new_key("node-other")
    rotated = node_env(
        ORDERFLOW_CODEC_KEY=other.spec(), ORDERFLOW_CODEC_OLD_KEYS=TEST_CODEC_KEY.spec()
    )
    seen = await scenario(node, "wait-status", rotated, **door, **order, status="PENDING_PAYMENT")
    assert seen["state"]["status"] == "PENDING_PAYMENT"
    err = await failing_scenario(
        node,
        "wait-status",
        node_env(ORDERFLOW_CODEC_KEY=other.spec()),
        **door,
        **order,
        status="PENDING_PAYMENT",
    )
    assert f"payload encrypted with codec key '{TEST_CODEC_KEY.key_id}'" in err, err
    assert "add it to ORDERFLOW_CODEC_OLD_KEYS" in err
    assert other.spec().split(":")[1] not in err and TEST_CODEC_KEY.spec().split(":")[1] not in err


async def test_node_without_a_codec_key_says_which_setting_is_missing(node: str) -> None:
    config = {"door": "temporal", "address": "127.0.0.1:1", "namespace": "default", "orderId": "x"}
    err = await failing_scenario(node, "wait-status", node_env(ORDERFLOW_CODEC_KEY=""), **config)
    assert "CodecKeyError: ORDERFLOW_CODEC_KEY is not set" in err, err
    bad = "k1:" + TEST_CODEC_KEY.spec().split(":")[1][:-2]
    err = await failing_scenario(node, "wait-status", node_env(ORDERFLOW_CODEC_KEY=bad), **config)
    assert "ORDERFLOW_CODEC_KEY: key 'k1' is not valid base64" in err and bad[3:] not in err, err


async def node_codec_test(node: str, fixture: Path, out: Path) -> str:
    """`node --test test/codec.test.js` on these vectors, Node's sealed payloads to `out`."""
    env = node_env(CODEC_VECTORS=str(fixture), CODEC_NODE_OUT=str(out))
    code, stdout, stderr = await run_node(node, "--test", "test/codec.test.js", env=env)
    assert code == 0, stdout + stderr
    return stdout


async def test_node_opens_what_python_sealed_and_python_opens_what_node_sealed(
    node: str, tmp_path: Path
) -> None:
    fresh = vectors.vectors(secret="a fresh secret " + new_order_id())
    report = await node_codec_test(
        node, vectors.write(tmp_path / "py.json", fresh), tmp_path / "node.json"
    )
    counts = dict(line.split()[1:3] for line in report.splitlines() if line.startswith("# "))
    assert int(counts["pass"]) >= 10 and counts["fail"] == "0", report
    sealed_by_node = json.loads((tmp_path / "node.json").read_text())["payloads"]
    assert len(sealed_by_node) == len(fresh["payloads"])
    for entry in sealed_by_node:
        payload = vectors.from_wire(entry["sealed"])
        assert payload.metadata["encoding"] == codec.ENCODING
        assert payload.metadata[codec.KEY_ID_METADATA] == vectors.CURRENT.key_id.encode()
    for opened, plain in vectors.decrypt_all(sealed_by_node):
        assert opened == plain


def test_the_committed_vectors_are_what_python_writes_and_reads_now() -> None:
    committed = json.loads(vectors.COMMITTED.read_text())
    fresh = vectors.vectors()
    for opened, plain in vectors.decrypt_all(committed["payloads"]):
        assert opened == plain
    assert [e["plain"] for e in committed["payloads"]] == [e["plain"] for e in fresh["payloads"]]
    for key in ("keys", "hashes", "keyErrors", "goodSpecs", "unknownKey"):
        assert committed[key] == fresh[key], f"{key}: run `python -m tests.node_codec_vectors`"


async def test_node_refuses_what_breaks_the_contract_before_sending_it(node: str) -> None:
    seen = await scenario(node, "refuse", orderId=new_order_id())
    assert seen["sent"] == 0
    refused = seen["refused"]
    assert refused["misspeltLine"]["type"] == "OrderInput"
    assert "/items/0 must have required property 'quantity'" in refused["misspeltLine"]["message"]
    assert "/amount must be integer" in refused["moneyAsText"]["message"]
    assert "additional properties (paymentId)" in refused["camelCase"]["message"]


async def test_the_node_http_client_asks_for_a_minimal_answer_when_told(node: str) -> None:
    """`node --test test/http.test.js`: HttpOrders.start({minimal: true}) sends RFC 7240's
    `Prefer: return=minimal` and hands back the 202 answer; without it, no Prefer header."""
    code, stdout, stderr = await run_node(node, "--test", "test/http.test.js", env=node_env())
    assert code == 0, stdout + stderr
    counts = dict(line.split()[1:3] for line in stdout.splitlines() if line.startswith("# "))
    assert counts["pass"] == "2" and counts["fail"] == "0", stdout
