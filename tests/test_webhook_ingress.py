"""POST /webhooks/*: signatures checked over the raw body, one job per event, nothing on a bad one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bullmq import Queue
from pydantic import ValidationError

from app import embedded
from app.web.app import create_app, http_server
from bridge.producer import QueueProducer
from orderflow.settings import Settings
from payments.providers import curl_command, sample_event, signed_headers
from payments.providers.razorpay import sign_razorpay
from payments.providers.stripe import sign_stripe, verify_stripe
from tests.bridge_helpers import counts
from workers.queues import webhook_spec

STRIPE_SECRET = "whsec_ingress_test"
RAZORPAY_SECRET = "rzp_ingress_test"


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        queue_prefix=f"in{uuid.uuid4().hex[:8]}",  # a rate-limit budget of this test's own
        stripe_webhook_secret=STRIPE_SECRET,
        razorpay_webhook_secret=RAZORPAY_SECRET,
        webhook_max_body_bytes=4096,
    )


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[Queue]:
    """A queue of its own per test, on the real Redis."""
    q = Queue(f"webhook-ingress-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    yield q
    await q.obliterate(force=True)
    await q.close()


@pytest.fixture
async def http(settings: Settings, queue: Queue) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings, queue))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def stripe_event(event_id: str = "evt_in_1", order_id: str = "o-1", **over: Any) -> bytes:
    event = {
        "id": event_id,
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": "pi_1",
                "object": "payment_intent",
                "amount": 129900,
                "amount_received": 129900,
                "currency": "inr",
                "metadata": {"order_id": order_id},
                "client_secret": "pi_1_secret_x",
            }
        },
        **over,
    }
    return json.dumps(event).encode()


def razorpay_event(payment_id: str = "pay_1", order_id: str = "o-1") -> bytes:
    entity = {"id": payment_id, "amount": 50000, "currency": "INR", "notes": {"order_id": order_id}}
    return json.dumps(
        {"entity": "event", "event": "payment.captured", "payload": {"payment": {"entity": entity}}}
    ).encode()


async def total_jobs(queue: Queue) -> int:
    counts = await queue.getJobCounts()
    return sum(counts.values())


async def test_valid_stripe_webhook_is_one_job(http: httpx.AsyncClient, queue: Queue) -> None:
    body = stripe_event()
    response = await http.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)},
    )
    assert response.status_code == 200, response.text
    assert response.json()["job_id"] == "stripe-evt_in_1"
    assert await queue.getJobCounts("waiting") == {"waiting": 1}
    job = await queue.getJob("stripe-evt_in_1")
    assert job is not None and job.name == "stripe-webhook"
    assert job.data["order_id"] == "o-1" and job.data["amount_minor"] == 129900
    assert job.data["payment_id"] == "pi_1" and job.data["kind"] == "payment_received"
    assert "client_secret" not in json.dumps(job.data)  # only what the order needs is queued


async def test_same_stripe_webhook_five_times_is_one_job(
    http: httpx.AsyncClient, queue: Queue
) -> None:
    body = stripe_event("evt_in_dup")
    for _ in range(5):
        # each redelivery is signed afresh, as Stripe does
        headers = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
        assert (
            await http.post("/webhooks/stripe", content=body, headers=headers)
        ).status_code == 200
    assert await total_jobs(queue) == 1


@pytest.mark.parametrize(
    "case", ["tampered", "wrong_secret", "stale", "future", "missing", "garbage"]
)
async def test_bad_stripe_signature_is_400_and_nothing_queued(
    http: httpx.AsyncClient, queue: Queue, case: str
) -> None:
    body = stripe_event("evt_in_bad")
    now = int(time.time())
    header = {
        "tampered": sign_stripe(stripe_event("evt_in_other"), STRIPE_SECRET),
        "wrong_secret": sign_stripe(body, "whsec_wrong"),
        "stale": sign_stripe(body, STRIPE_SECRET, now - 301),
        "future": sign_stripe(body, STRIPE_SECRET, now + 310),  # margin: now was truncated
        "missing": None,
        "garbage": "not a signature",
    }[case]
    headers = {"Stripe-Signature": header} if header else {}
    response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert "stripe webhook signature rejected" in response.json()["detail"]
    assert await total_jobs(queue) == 0


async def test_bad_razorpay_signature_is_400_and_nothing_queued(
    http: httpx.AsyncClient, queue: Queue
) -> None:
    body = razorpay_event()
    for headers in (
        {"X-Razorpay-Signature": sign_razorpay(body, "wrong")},
        {"X-Razorpay-Signature": sign_razorpay(body + b" ", RAZORPAY_SECRET)},
        {},
    ):
        response = await http.post("/webhooks/razorpay", content=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_signature"
    assert await total_jobs(queue) == 0


async def test_razorpay_event_id_header_dedupes(
    http: httpx.AsyncClient, queue: Queue, settings: Settings
) -> None:
    body = razorpay_event()
    for _ in range(5):
        headers = signed_headers("razorpay", body, settings, event_id="evt_rzp_7")
        response = await http.post("/webhooks/razorpay", content=body, headers=headers)
        assert response.status_code == 200, response.text
    assert await total_jobs(queue) == 1
    job = await queue.getJob("razorpay-evt_rzp_7")
    assert job is not None and job.data["amount_minor"] == 50000 and job.data["order_id"] == "o-1"


async def test_razorpay_without_event_id_dedupes_by_body_hash(
    http: httpx.AsyncClient, queue: Queue
) -> None:
    body = razorpay_event("pay_nohdr")
    headers = {"X-Razorpay-Signature": sign_razorpay(body, RAZORPAY_SECRET)}
    ids = set()
    for _ in range(3):
        response = await http.post("/webhooks/razorpay", content=body, headers=headers)
        ids.add(response.json()["job_id"])
    other = razorpay_event("pay_other")
    await http.post(
        "/webhooks/razorpay",
        content=other,
        headers={"X-Razorpay-Signature": sign_razorpay(other, RAZORPAY_SECRET)},
    )
    assert len(ids) == 1 and next(iter(ids)).startswith("razorpay-body-")
    assert await total_jobs(queue) == 2


async def test_oversized_body_is_413(http: httpx.AsyncClient, queue: Queue) -> None:
    body = stripe_event(padding="x" * 5000)
    headers = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
    response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert "limit is 4096" in response.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:
        # no Content-Length: the limit must hold while streaming too
        for _ in range(10):
            yield b"x" * 1000

    response = await http.post("/webhooks/stripe", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert await total_jobs(queue) == 0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "body is not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"object": "event", "type": "charge.succeeded"}).encode(), "no event id"),
        (json.dumps({"id": "evt_x", "object": "event"}).encode(), "no event type"),
    ],
)
async def test_malformed_body_with_valid_signature_is_400(
    http: httpx.AsyncClient, queue: Queue, body: bytes, detail: str
) -> None:
    headers = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
    response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_event"
    assert detail in response.json()["detail"]
    assert await total_jobs(queue) == 0


async def test_unhandled_event_type_is_acknowledged_not_queued(
    http: httpx.AsyncClient, queue: Queue
) -> None:
    body = stripe_event("evt_cust", type="customer.created")
    headers = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
    response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert await total_jobs(queue) == 0


async def test_queue_down_is_503_so_the_gateway_redelivers(settings: Settings) -> None:
    settings.webhook_enqueue_timeout_seconds = 0.5
    dead = Queue("webhook-ingress-dead", {"connection": "redis://127.0.0.1:1/0"})
    transport = httpx.ASGITransport(app=create_app(settings, dead))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        body = stripe_event("evt_down")
        headers = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
        response = await client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 503
    assert "evt_down not queued (TimeoutError: no answer within 0.5s)" in response.json()["detail"]


async def test_healthz(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_curl_command_posts_a_signed_webhook_to_the_running_app(
    settings: Settings, queue: Queue, tmp_path: Path
) -> None:
    settings.http_port = embedded.free_port()
    server = http_server(settings, create_app(settings, queue))
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.to_thread(embedded.wait_for_port, "127.0.0.1", settings.http_port, 10)
        for provider in ("stripe", "razorpay"):
            body = tmp_path / f"{provider}.json"
            body.write_bytes(sample_event(provider, "o-curl", 129_900))
            command = curl_command(provider, body, settings, event_id="evt_curl_rzp")
            done = await asyncio.to_thread(
                subprocess.run, command, shell=True, capture_output=True, text=True, check=True
            )
            assert json.loads(done.stdout)["status"] == "accepted", done.stdout
        jobs = await queue.getJobs(["waiting"])
        assert sorted(j.data["amount_minor"] for j in jobs) == [129900, 129900]
        assert {j.data["provider"] for j in jobs} == {"stripe", "razorpay"}
    finally:
        server.should_exit = True
        await task


async def test_a_signed_event_too_large_to_queue_is_refused_for_good_not_503(
    settings: Settings, redis_url: str
) -> None:
    """503 makes the gateway redeliver for days; a payload the guard refuses never fits."""
    from bridge.producer import QueueProducer
    from workers.queues import webhook_spec

    tag = uuid.uuid4().hex[:8]
    spec = webhook_spec(settings).with_(
        prefix=f"t{tag}", name=f"hooks-{tag}", max_payload_bytes=1024
    )
    producer = QueueProducer.connect(spec, redis_url)
    transport = httpx.ASGITransport(app=create_app(settings, producer))
    body = stripe_event("evt_huge", order_id="o-" + "9" * 2000)  # under the 4096-byte body cap
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post(
            "/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)},
        )
    assert response.status_code == 422, response.text
    assert "evt_huge" in response.json()["detail"] and "1024" in response.json()["detail"]
    queue = Queue(spec.name, {"connection": redis_url, "prefix": spec.prefix})
    assert sum((await queue.getJobCounts()).values()) == 0
    await queue.close()
    await producer.close()


async def test_signed_event_whose_id_cannot_be_a_job_id_is_400_and_nothing_queued(
    http: httpx.AsyncClient, queue: Queue
) -> None:
    for event_id in ("evt_1:2", "evt\n2", "evt\x00x"):
        body = stripe_event(event_id)
        headers = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
        response = await http.post("/webhooks/stripe", content=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "malformed_event"
        assert "\n" not in response.json()["detail"]
    assert await total_jobs(queue) == 0


async def test_a_signed_event_whose_decline_text_holds_a_card_number_is_queued_without_it(
    settings: Settings, redis_url: str
) -> None:
    """The gateway's text may echo what a customer typed; the event itself must not be lost."""
    spec = webhook_spec(settings).with_(name=f"webhook-guard-{uuid.uuid4().hex[:8]}")
    producer = QueueProducer.connect(spec, redis_url)
    transport = httpx.ASGITransport(app=create_app(settings, producer))
    card = "4000 0000 0000 0002"
    event = json.loads(stripe_event("evt_card_text"))
    event["type"] = "payment_intent.payment_failed"
    event["data"]["object"]["last_payment_error"] = {"message": f"card {card} was declined"}
    body = json.dumps(event).encode()
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        headers = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
        response = await client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text
    queue = Queue(spec.name, {"connection": redis_url, "prefix": spec.prefix})
    job = await queue.getJob("stripe-evt_card_text")
    await queue.close()
    await producer.close()
    assert job is not None and job.data["order_id"] == "o-1" and job.data["payment_id"] == "pi_1"
    assert job.data["kind"] == "payment_failed"
    assert "withheld" in job.data["reason"] and "card number" in job.data["reason"]
    assert card not in json.dumps(job.data) and card.replace(" ", "") not in json.dumps(job.data)


def test_stripe_tolerance_is_never_zero() -> None:
    for bad in (0, -1, 86_401):
        with pytest.raises(ValidationError, match="webhook_tolerance_seconds"):
            Settings(webhook_tolerance_seconds=bad)
    body = stripe_event("evt_old")
    ancient = sign_stripe(body, STRIPE_SECRET, int(time.time()) - 10 * 365 * 86400)
    with pytest.raises(ValueError, match="tolerance must be positive"):
        verify_stripe(body, ancient, STRIPE_SECRET, tolerance=0)


async def test_rate_limit_per_client_is_shared_by_replicas_and_answered_429(
    settings: Settings, redis_url: str
) -> None:
    limited = settings.model_copy(
        update={
            "webhook_rate_limit": 5,
            "webhook_rate_window_seconds": 60,
        }
    )
    queue = Queue(f"webhook-rl-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    body = stripe_event("evt_rl")
    headers = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
    # two replicas of the app, one Redis: the client's budget is counted once
    replicas = [create_app(limited, queue), create_app(limited, queue)]
    answers: list[int] = []
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=a, client=("203.0.113.7", 4000)),
                          base_url="http://test")
        for a in replicas
    ]  # fmt: skip
    for i in range(8):
        response = await clients[i % 2].post("/webhooks/stripe", content=body, headers=headers)
        answers.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"] == "rate_limited"
            assert 1 <= int(response.headers["retry-after"]) <= 60
    assert answers == [200] * 5 + [429] * 3
    # another client has its own budget
    other = httpx.ASGITransport(app=replicas[0], client=("198.51.100.9", 4000))
    async with httpx.AsyncClient(transport=other, base_url="http://test") as http:
        assert (
            await http.post("/webhooks/stripe", content=body, headers=headers)
        ).status_code == 200
    for client in clients:
        await client.aclose()
    assert await total_jobs(queue) == 1  # one event id, however many times it came
    await queue.obliterate(force=True)
    await queue.close()


async def test_a_webhook_posted_while_redis_is_stopped_or_frozen_is_503_and_taken_when_redelivered(
    settings: Settings, tmp_path: Path
) -> None:
    """The app as `orderflow run` builds it: its producer and its rate limiter on one Redis."""
    url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    data, log = tmp_path / "redis", tmp_path / "redis.log"
    redis = embedded.start_redis(url=url, data_dir=data, log=log)
    local = settings.model_copy(update={"redis_url": url})
    spec = webhook_spec(local).with_(name=f"webhook-outage-{uuid.uuid4().hex[:8]}")
    producer = QueueProducer.connect(spec, url)
    transport = httpx.ASGITransport(app=create_app(local, producer))
    http = httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30)

    async def post(event_id: str) -> tuple[httpx.Response, float]:
        body = stripe_event(event_id)  # signed afresh on each delivery, as Stripe does
        headers = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
        started = time.monotonic()
        response = await http.post("/webhooks/stripe", content=body, headers=headers)
        return response, time.monotonic() - started

    try:
        embedded.stop(redis)
        stopped, took = await post("evt_redis_stopped")
        assert stopped.status_code == 503 and took < 10.0, stopped.text
        assert "evt_redis_stopped not queued" in stopped.json()["detail"]

        redis = embedded.start_redis(url=url, data_dir=data, log=log)
        os.kill(redis.pid, signal.SIGSTOP)  # accepts connections, answers nothing
        frozen, took = await post("evt_redis_frozen")
        assert frozen.status_code == 503 and took < 10.0, frozen.text
        assert "evt_redis_frozen not queued" in frozen.json()["detail"]
        os.kill(redis.pid, signal.SIGCONT)

        # the gateway redelivers both; Redis takes them now
        for event_id in ("evt_redis_stopped", "evt_redis_frozen"):
            again, _ = await post(event_id)
            assert again.status_code == 200, again.text
        assert (await counts(spec, url))["waiting"] == 2
    finally:
        await http.aclose()
        await producer.close()
        os.kill(redis.pid, signal.SIGCONT)
        embedded.stop(redis)


def razorpay_captured(amount: object, currency: object = "INR") -> bytes:
    """payment.captured with any amount and currency, as a sender might write them."""
    entity = {"id": "pay_odd", "amount": amount, "currency": currency,
              "notes": {"order_id": "o-1"}}  # fmt: skip
    return json.dumps(
        {"entity": "event", "event": "payment.captured", "payload": {"payment": {"entity": entity}}}
    ).encode()


@pytest.mark.parametrize("amount", [10**30, 2**63, -1, 12.5, "129900", True, None])
async def test_a_signed_event_with_an_impossible_amount_is_400_naming_the_field_and_event(
    http: httpx.AsyncClient, queue: Queue, amount: object
) -> None:
    event = json.loads(stripe_event("evt_big_amount"))
    event["data"]["object"]["amount_received"] = amount
    body = json.dumps(event).encode()
    response = await http.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)},
    )
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["error"] == "malformed_event"
    assert "evt_big_amount" in answer["detail"]
    assert "data.object.amount_received" in answer["detail"]
    body = razorpay_captured(amount)
    response = await http.post(
        "/webhooks/razorpay",
        content=body,
        headers={
            "X-Razorpay-Signature": sign_razorpay(body, RAZORPAY_SECRET),
            "X-Razorpay-Event-Id": "rzp_evt_big",
        },
    )
    assert response.status_code == 400, response.text
    assert "rzp_evt_big" in response.json()["detail"]
    assert "payload.payment.entity.amount" in response.json()["detail"]
    assert await total_jobs(queue) == 0


@pytest.mark.parametrize("currency", ["", None, "rupees", "1NR"])
async def test_a_signed_payment_with_an_empty_or_unknown_currency_is_400_naming_the_event(
    http: httpx.AsyncClient, queue: Queue, currency: object
) -> None:
    event = json.loads(stripe_event("evt_no_currency"))
    event["data"]["object"]["currency"] = currency
    body = json.dumps(event).encode()
    response = await http.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)},
    )
    assert response.status_code == 400, response.text
    assert "evt_no_currency" in response.json()["detail"]
    assert "data.object.currency" in response.json()["detail"]
    body = razorpay_captured(50_000, currency)
    response = await http.post(
        "/webhooks/razorpay",
        content=body,
        headers={
            "X-Razorpay-Signature": sign_razorpay(body, RAZORPAY_SECRET),
            "X-Razorpay-Event-Id": "rzp_evt_cur",
        },
    )
    assert response.status_code == 400, response.text
    assert "rzp_evt_cur" in response.json()["detail"]
    assert "payload.payment.entity.currency" in response.json()["detail"]
    assert await total_jobs(queue) == 0
