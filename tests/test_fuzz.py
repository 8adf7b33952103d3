"""Property-based fuzzing (Hypothesis, derandomized): webhook endpoints and job data.

Thousands of bodies, headers and encodings at both webhook endpoints: never a 5xx, nothing
enqueued for a bad body, the app healthy after. Thousands of job payloads through the producer
and a real worker: a clear refusal or a job that ends completed or dead-lettered, never a stuck
job or a dead worker.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from app.smtp_sink import SmtpSink
from app.web.app import create_app
from bridge.producer import QueueProducer
from bridge.runtime import BridgeWorker
from bridge.specs import QueueSpec
from mail.processor import EmailProcessor
from orderflow.contracts.mail import EmailJob
from orderflow.contracts.payment import WebhookJob
from orderflow.errors import OrderflowError
from orderflow.settings import Settings
from payments.events import MONEY_KINDS, amount_problem, currency_problem
from payments.processor import WebhookProcessor
from payments.providers import parse_event
from payments.providers.razorpay import razorpay_payment_captured, sign_razorpay
from payments.providers.stripe import sign_stripe, stripe_payment_succeeded
from workers.queues import email_spec, webhook_spec

STRIPE_SECRET = "whsec_fuzz_secret"
RAZORPAY_SECRET = "rzp_fuzz_secret"
MAX_BODY = 4096
HTTP_EXAMPLES = 2500  # about 10 s on a 2-core machine
JOB_EXAMPLES = 1500
FUZZ = settings(
    derandomize=True,  # the same examples on every run: CI never flakes on a new one
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63, 2**63 - 1, 10**30, -1])  # the edges of a 64-bit amount
    | st.floats()  # NaN and infinities too
    | st.text(max_size=40)
    | st.sampled_from(["evt:1", "a\nb", "\x00", "4242 4242 4242 4242", "https://x.test/reset?token=t",
                       "<script>alert(1)</script>", "o-1001", "", " "])
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)  # fmt: skip
encodings = st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "utf-8-sig"])
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


def _sample(provider: str) -> dict[str, Any]:
    body = (
        stripe_payment_succeeded("o-fuzz", 129900, event_id="evt_fuzz")
        if provider == "stripe"
        else razorpay_payment_captured("o-fuzz", 129900, payment_id="pay_fuzz")
    )
    parsed: dict[str, Any] = json.loads(body)
    return parsed


@st.composite
def mutated_event(draw: st.DrawFn, provider: str) -> Any:
    """A real event with some fields replaced by anything (ids with ':', huge numbers ...)."""
    event = _sample(provider)
    for _ in range(draw(st.integers(0, 4))):
        node = event
        path = draw(st.lists(st.sampled_from(["id", "type", "event", "data", "object", "payload",
                                              "payment", "entity", "metadata", "order_id", "amount",
                                              "amount_received", "currency", "notes"]),
                             min_size=1, max_size=4))  # fmt: skip
        for key in path[:-1]:
            child = node.get(key) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                break
            node = child
        if isinstance(node, dict):
            node[path[-1]] = draw(json_values)
    return event


@st.composite
def webhook_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """A provider, a body and headers: from random bytes to correctly signed odd events."""
    provider = draw(st.sampled_from(["stripe", "razorpay"]))
    shape = draw(st.sampled_from(["bytes", "json", "event", "event", "event", "large"]))
    if shape == "bytes":
        body = draw(st.binary(max_size=600))
    elif shape == "large":
        body = b"{" + b" " * draw(st.integers(MAX_BODY - 10, MAX_BODY + 50)) + b"}"
    else:
        value = draw(json_values) if shape == "json" else draw(mutated_event(provider))
        text = json.dumps(value, ensure_ascii=draw(st.booleans()))  # NaN is written as NaN
        body = text.encode(draw(encodings), errors="replace")
    signing = draw(
        st.sampled_from(["valid", "valid", "valid", "none", "garbage", "wrong", "stale"])
    )
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", "", "x/y"]))}
    name = "Stripe-Signature" if provider == "stripe" else "X-Razorpay-Signature"
    secret = STRIPE_SECRET if provider == "stripe" else RAZORPAY_SECRET
    if signing == "garbage":
        headers[name] = draw(header_text)
    elif signing != "none":
        key = secret if signing != "wrong" else "not-the-secret"
        if provider == "stripe":
            stamp = int(time.time()) - (3600 if signing == "stale" else 0)
            headers[name] = sign_stripe(body, key, stamp)
        else:
            headers[name] = sign_razorpay(body, key)
    if provider == "razorpay" and draw(st.booleans()):
        headers["X-Razorpay-Event-Id"] = draw(header_text)
    return provider, body, headers


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop of the test's own: Hypothesis drives examples from synchronous code."""
    fresh = asyncio.new_event_loop()
    yield fresh
    fresh.close()


def test_fuzz_webhook_endpoints_never_5xx_and_enqueue_nothing_for_a_bad_body(
    loop: asyncio.AbstractEventLoop, redis_url: str
) -> None:
    config = Settings(
        redis_url=redis_url,
        queue_prefix=f"fz{uuid.uuid4().hex[:8]}",
        stripe_webhook_secret=STRIPE_SECRET,
        razorpay_webhook_secret=RAZORPAY_SECRET,
        webhook_max_body_bytes=MAX_BODY,
        webhook_rate_limit=0,  # thousands of requests from one client on purpose
    )
    spec = webhook_spec(config)
    producer = QueueProducer.connect(spec, redis_url)
    app = create_app(config, producer)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fuzz")
    accepted: set[str] = set()
    seen: dict[int, int] = {}

    async def waiting() -> int:
        return int(await producer.client.execute("LLEN", f"{spec.prefix}:{spec.name}:wait"))

    async def one(provider: str, body: bytes, headers: dict[str, str]) -> None:
        response = await http.post(f"/webhooks/{provider}", content=body, headers=headers)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (response.status_code, response.text)
        answer = response.json()
        assert isinstance(answer, dict)
        if response.status_code == 200 and answer.get("status") == "accepted":
            accepted.add(answer["job_id"])
            event = parse_event(provider, body, headers)
            if event.kind in MONEY_KINDS:  # only money a gateway can have moved is queued
                assert not amount_problem(event.amount_minor), event
                assert not currency_problem(event.currency), event
        else:
            assert "job_id" not in answer
        assert await waiting() == len(accepted)  # nothing enqueued for a bad body

    @settings(FUZZ, max_examples=HTTP_EXAMPLES)
    @given(webhook_requests())
    def fuzz(request: tuple[str, bytes, dict[str, str]]) -> None:
        loop.run_until_complete(one(*request))

    fuzz()

    async def healthy_after() -> None:
        assert (await http.get("/healthz")).status_code == 200
        body = stripe_payment_succeeded(
            "o-after", 500, event_id=f"evt_after_{uuid.uuid4().hex[:6]}"
        )
        headers = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
        response = await http.post("/webhooks/stripe", content=body, headers=headers)
        assert response.status_code == 200 and response.json()["status"] == "accepted"
        assert await waiting() == len(accepted) + 1
        await http.aclose()
        await producer.client.execute("DEL", f"{spec.prefix}:{spec.name}:wait")
        await producer.close()

    loop.run_until_complete(healthy_after())
    # the mix reached every outcome, from accepted to refused
    assert {200, 400, 413} <= set(seen), seen
    assert seen[200] >= 100 and seen[400] >= 500, seen


amounts = (
    st.integers(-(10**9), 10**9) | st.decimals(0, 10**6, places=2).map(str) | st.floats(0, 1e6)
)
texts = st.text(min_size=1, max_size=20)
links = {
    "resetUrl": st.sampled_from(["https://shop.example/reset/r-1", "javascript:x()"]),
    "trackingUrl": st.sampled_from(["https://t.example/1", "ftp://x"]),
    "trackingNumber": st.text(max_size=12),
    "note": st.text(max_size=30),
    "currency": st.sampled_from(["INR", "usd", "XX"]),
}
seed_shape = st.fixed_dictionaries(  # as the seed's Node producers write it
    {"orderNumber": texts, "total": amounts,
     "items": st.lists(st.fixed_dictionaries(
         {"sku": texts, "name": texts, "qty": st.integers(1, 99), "price": amounts}),
         min_size=1, max_size=3)},
    optional=links,
)  # fmt: skip
our_shape = st.fixed_dictionaries(  # as activities/notify.py writes it
    {"orderNumber": texts, "totalMinor": st.integers(0, 10**9), "currency": st.just("INR"),
     "items": st.lists(st.fixed_dictionaries(
         {"sku": texts, "quantity": st.integers(1, 99), "unitPriceMinor": st.integers(0, 10**9)}),
         min_size=1, max_size=3)},
    optional={k: v for k, v in links.items() if k != "currency"},
)  # fmt: skip
odd_items = st.fixed_dictionaries(
    {},
    optional={"sku": st.text(max_size=12), "name": st.text(max_size=20),
              "qty": st.integers(0, 99) | st.text(max_size=3), "quantity": st.integers(-1, 99),
              "price": amounts, "unitPrice": amounts,
              "unitPriceMinor": st.integers(0, 10**9) | st.floats()},
)  # fmt: skip
odd_shape = st.fixed_dictionaries(  # either shape with any field missing or odd
    {},
    optional={"orderNumber": st.text(max_size=12) | st.integers(), "total": amounts,
              "grandTotal": amounts, "totalMinor": st.integers(0, 10**9),
              "items": st.lists(odd_items, max_size=3), **links},
)  # fmt: skip
mail_data = (
    seed_shape | our_shape | odd_shape
    | st.dictionaries(st.text(max_size=12), json_values, max_size=6) | json_values
)  # fmt: skip


@st.composite
def email_jobs(draw: st.DrawFn) -> tuple[str, Any, dict[str, Any]]:
    """A job name, its data and options, shaped like mail jobs or like nothing at all."""
    name = draw(st.sampled_from([*EmailJob, "send-nothing"]) | st.text(max_size=20))
    if draw(st.booleans()):
        data: Any = {
            "to": draw(st.emails() | st.emails() | st.text(max_size=30)),
            "subject": draw(st.sampled_from(["Your order", "Welcome — hi"]) | st.text(max_size=40)),
            "template": draw(st.sampled_from([*EmailJob, "order_confirmation", "nope"])),
            "data": draw(mail_data),
        }
    else:
        data = draw(json_values)
    opts = {"jobId": draw(st.none() | st.text(max_size=20) | st.sampled_from(["a:b", "12", "x\n"]))}
    return name, data, opts


@st.composite
def webhook_jobs(draw: st.DrawFn) -> tuple[str, Any, dict[str, Any]]:
    """Webhook job data as a Node producer might send it: a real event's fields, or anything."""
    name = draw(st.sampled_from([*WebhookJob]) | st.text(max_size=12))
    fields = ["provider", "event_id", "type", "kind", "order_id", "payment_id", "amount_minor",
              "currency", "reason", "refund_id", "flagged", "window_hours"]  # fmt: skip
    data = draw(st.dictionaries(st.sampled_from(fields), json_values, max_size=8) | json_values)
    if draw(st.booleans()):  # a real event's data with an amount of any size
        event = {"provider": "stripe", "event_id": f"evt_{draw(st.integers(0, 10**9))}",
                 "type": "payment_intent.succeeded", "kind": "payment_received",
                 "order_id": "o-fuzz", "payment_id": "pi_fuzz", "currency": "INR"}  # fmt: skip
        # refused (negative, 2^63 and past) or stored, whole, in the 64-bit money columns
        stored = st.integers(0, 2**63 - 1) | st.integers(2**31 - 2, 2**31 + 2)
        refused = st.integers(-(2**70), -1) | st.integers(2**63, 2**70) | st.just(10**30)
        big = stored | refused
        data = {**event, "amount_minor": draw(big)}
    return name, data, {"jobId": f"wh-{draw(st.integers(0, 10**9))}"}


async def _drain(spec: QueueSpec, worker: BridgeWorker, producer: QueueProducer, n: int) -> dict[str, int]:  # fmt: skip
    """Run the worker until every added job has finished; the counts at the end."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, 5))
    keys = [f"{spec.prefix}:{spec.name}:{k}" for k in ("completed", "failed", "wait", "active", "delayed")]  # fmt: skip
    deadline = time.monotonic() + 120  # a bound only: it ends when every job has finished
    while True:
        done, failed, wait, active, delayed = await producer.client.pipeline(
            [["ZCARD", keys[0]], ["ZCARD", keys[1]], ["LLEN", keys[2]], ["LLEN", keys[3]],
             ["ZCARD", keys[4]]]
        )  # fmt: skip
        if done + failed >= n or time.monotonic() > deadline:
            break
        assert not task.done(), "the worker stopped by itself"
        await asyncio.sleep(0.05)  # the poll interval, not a wait for anything
    stop.set()
    await asyncio.wait_for(task, 20)
    return {"completed": done, "failed": failed, "waiting": wait, "active": active, "delayed": delayed}  # fmt: skip


def _fuzz_producer(
    loop: asyncio.AbstractEventLoop,
    producer: QueueProducer,
    jobs: st.SearchStrategy[tuple[str, Any, dict[str, Any]]],
) -> tuple[set[str], int]:
    """Add every generated job; each is added or refused with a clear OrderflowError."""
    added: set[str] = set()
    refused = 0

    async def add(name: str, data: Any, opts: dict[str, Any]) -> None:
        nonlocal refused
        try:
            added.add(await producer.add(name, data, opts))
        except OrderflowError as err:
            refused += 1
            message = str(err)
            assert producer.spec.name in message and "\x00" not in message and "\n" not in message

    @settings(FUZZ, max_examples=JOB_EXAMPLES)
    @given(jobs)
    def fuzz(job: tuple[str, Any, dict[str, Any]]) -> None:
        loop.run_until_complete(add(*job))

    fuzz()
    return added, refused


def test_fuzz_email_job_data_is_refused_or_finished_and_the_worker_survives(
    loop: asyncio.AbstractEventLoop, redis_url: str, sink: SmtpSink, mail_engine: Engine
) -> None:
    config = Settings(redis_url=redis_url, smtp_host=sink.host, smtp_port=sink.port)
    tag = uuid.uuid4().hex[:8]
    spec = email_spec(config).with_(prefix=f"fz{tag}", name=f"mail-{tag}", rate_limit=None,
                                    attempts=1, concurrency=20)  # fmt: skip
    producer = QueueProducer.connect(spec, redis_url)
    added, refused = _fuzz_producer(loop, producer, email_jobs())
    worker = BridgeWorker(spec, EmailProcessor(config, spec, mail_engine), redis_url)
    final = loop.run_until_complete(_drain(spec, worker, producer, len(added)))
    assert final["completed"] + final["failed"] == len(added), final  # none lost, none stuck
    assert final["waiting"] == final["active"] == 0
    # the mix reached every outcome: refused, sent, dead-lettered
    assert refused > 100 and final["completed"] > 50 and final["failed"] > 100, (refused, final)
    loop.run_until_complete(producer.close())


def test_fuzz_webhook_job_data_is_refused_or_finished_and_the_worker_survives(
    loop: asyncio.AbstractEventLoop, redis_url: str, env: WorkflowEnvironment, engine: Engine
) -> None:
    config = Settings(redis_url=redis_url)
    tag = uuid.uuid4().hex[:8]
    spec = webhook_spec(config).with_(prefix=f"fz{tag}", name=f"hooks-{tag}", attempts=1,
                                      concurrency=20)  # fmt: skip
    producer = QueueProducer.connect(spec, redis_url)
    added, _ = _fuzz_producer(loop, producer, webhook_jobs())
    orders = OrderClient(env.client, config, engine)
    # an event for an order nobody started is rejected at once, not retried for ten minutes
    processor = WebhookProcessor(orders, engine, queue=spec.name, unknown_order_window_seconds=0)
    worker = BridgeWorker(spec, processor, redis_url)
    final = loop.run_until_complete(_drain(spec, worker, producer, len(added)))
    assert final["completed"] + final["failed"] == len(added), final
    assert final["waiting"] == final["active"] == 0
    assert final["failed"] > 100, final

    async def failed_reasons() -> list[str]:
        ids = await producer.client.execute("ZRANGE", f"{spec.prefix}:{spec.name}:failed", 0, -1)
        return [str(await producer.client.execute(
            "HGET", f"{spec.prefix}:{spec.name}:{i.decode() if isinstance(i, bytes) else i}",
            "failedReason")) for i in ids]  # fmt: skip

    # every dead-lettered job says why, in our words: never a database's overflow
    for reason in loop.run_until_complete(failed_reasons()):
        assert "too large to convert" not in reason and "out of range" not in reason, reason
    loop.run_until_complete(producer.close())
