"""Interop with Node BullMQ 6.7 (tests/node): the same queues, in both directions."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import UnrecoverableError
from sqlalchemy.engine import Engine

from app.smtp_sink import SmtpSink
from app.web.metrics import queue_depths
from bridge.admin import JobNotRetryableError, QueueAdmin
from bridge.job import Job
from bridge.producer import BulkJob, QueueProducer
from bridge.redis_client import RedisClient
from bridge.specs import QueueSpec
from mail.processor import EmailProcessor, message_id_for
from orderflow.settings import Settings
from tests.bridge_helpers import counts, eventually, running, unique_spec

NODE_DIR = Path(__file__).with_name("node")


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with tests/node's packages installed (npm ci) if they are not yet."""
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node is not installed (Node 20 is needed for the interop tests)")
    if not (NODE_DIR / "node_modules" / "bullmq").exists():
        import subprocess

        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    return binary


async def run_node(node: str, script: str, *args: str) -> Any:
    """Run a tests/node script and parse the JSON it prints."""
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / script), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


def where(spec: QueueSpec, redis_url: str) -> list[str]:
    return [redis_url, spec.prefix, spec.name]


async def test_node_producer_job_is_processed_by_our_email_worker(
    mail_engine: Engine, node: str, redis_url: str, sink: SmtpSink
) -> None:
    settings = Settings(redis_url=redis_url, smtp_port=sink.port)
    spec = unique_spec(settings)
    data = {"to": "neha@example.com", "subject": "Welcome aboard", "template": "welcome",
            "data": {"name": "Neha"}}  # fmt: skip
    opts = {"jobId": "welcome-neha", "attempts": 3,
            "backoff": {"type": "exponential", "delay": 2000}}  # fmt: skip
    added = await run_node(node, "produce.js", *where(spec, redis_url), "send-welcome",
                           json.dumps(data), json.dumps(opts))  # fmt: skip
    assert added == {"id": "welcome-neha"}
    client = RedisClient(redis_url)
    async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):
        await eventually(lambda: _has(spec, redis_url, "completed", 1))
    [mail] = sink.store.messages(to="neha@example.com")
    assert mail.subject == "Welcome aboard" and "Welcome, Neha" in mail.text
    seen = await run_node(node, "inspect.js", *where(spec, redis_url), "welcome-neha")
    job = seen["jobs"]["welcome-neha"]
    assert job["state"] == "completed" and job["attemptsMade"] == 1
    assert job["returnvalue"] == {
        "sent": True,
        "messageId": message_id_for(spec.name, "welcome-neha", data),
    }
    await client.close()


SEED_USER = {"email": "meera@example.com"}
# an order as the seed's Node code holds it: items {sku, name, qty, price}, grandTotal in rupees
SEED_ORDER = {
    "orderNumber": "ORD-2026-0042",
    "items": [
        {"sku": "TSHIRT-M", "name": "T-shirt (M)", "qty": 2, "price": 799},
        {"sku": "MUG-1", "name": "Mug", "qty": 3, "price": 499.5},
    ],
    "grandTotal": 3096.5,
}


async def test_the_seeds_order_confirmation_producer_gets_its_mail_with_quantities_and_total(
    mail_engine: Engine, node: str, redis_url: str, sink: SmtpSink
) -> None:
    settings = Settings(redis_url=redis_url, smtp_port=sink.port)  # currency: INR by default
    spec = unique_spec(settings)
    added = await run_node(node, "seed_email.js", *where(spec, redis_url),
                           json.dumps(SEED_USER), json.dumps(SEED_ORDER))  # fmt: skip
    assert added == {"added": True}

    async def delivered() -> bool:
        return bool(sink.store.messages(to="meera@example.com"))

    async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):
        await eventually(delivered)
    [mail] = sink.store.messages(to="meera@example.com")
    assert mail.subject == "Order Confirmed"
    assert "ORD-2026-0042" in mail.text
    assert "T-shirt (M) x 2: ₹799.00" in mail.text
    assert "Mug x 3: ₹499.50" in mail.text
    assert "Total: ₹3,096.50" in mail.text
    assert '<td align="center">2</td>' in mail.html and '<td align="center">3</td>' in mail.html
    assert "₹799.00" in mail.html and "₹499.50" in mail.html and "Total: ₹3,096.50" in mail.html
    assert (await counts(spec, redis_url))["failed"] == 0  # removeOnComplete: the job is gone


async def test_our_producer_job_is_processed_by_a_node_worker(node: str, redis_url: str) -> None:
    spec = unique_spec(Settings(redis_url=redis_url))
    producer = QueueProducer.connect(spec, redis_url)
    mail = {"to": "a@example.com", "subject": "Shipped", "template": "shipping_notification",
            "data": {"orderNumber": "o-7", "trackingNumber": "TRK1"}}  # fmt: skip
    await producer.add("send-shipping-notification", mail, {"jobId": "shipping-o-7"})
    await producer.add("send-welcome", {**mail, "subject": "Hi"}, {"priority": 5})
    await producer.add("send-welcome", {**mail, "subject": "Later"}, {"delay": 200})
    seen = await run_node(node, "worker.js", *where(spec, redis_url), "3")
    by_id = {job["id"]: job for job in seen}
    assert by_id["shipping-o-7"]["data"] == mail
    assert by_id["shipping-o-7"]["name"] == "send-shipping-notification"
    assert by_id["shipping-o-7"]["opts"]["attempts"] == 3
    assert by_id["shipping-o-7"]["opts"]["backoff"] == {"type": "exponential", "delay": 2000}
    assert sorted(job["data"]["subject"] for job in seen) == ["Hi", "Later", "Shipped"]
    assert (await counts(spec, redis_url))["completed"] == 3
    await producer.close()


async def test_node_queue_reads_our_counts_failures_progress_and_results(
    node: str, redis_url: str
) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", {"to": "ok@example.com"}, {"jobId": "good"})
    await producer.add("send-welcome", {"to": "bad@example.com"}, {"jobId": "bad"})

    async def work(job: Job) -> dict[str, str]:
        await job.update_progress({"step": "rendered", "percent": 60})
        if job.id == "bad":
            raise UnrecoverableError(f"recipient of {job.id} bounced")
        return {"delivered": job.data["to"]}

    async with running(spec, work, redis_url):
        await eventually(lambda: _has(spec, redis_url, "failed", 1))
        await eventually(lambda: _has(spec, redis_url, "completed", 1))
    seen = await run_node(node, "inspect.js", *where(spec, redis_url), "good", "bad")
    assert seen["counts"] == {"waiting": 0, "active": 0, "completed": 1, "failed": 1, "delayed": 0}
    good, bad = seen["jobs"]["good"], seen["jobs"]["bad"]
    assert good["returnvalue"] == {"delivered": "ok@example.com"}
    assert good["progress"] == {"step": "rendered", "percent": 60}
    assert bad["state"] == "failed" and bad["failedReason"] == "recipient of bad bounced"
    assert bad["attemptsMade"] == 1 and "UnrecoverableError" in bad["stacktrace"][0]
    await producer.close()


async def _has(spec: QueueSpec, redis_url: str, state: str, n: int) -> bool:
    return (await counts(spec, redis_url))[state] >= n


async def test_node_and_python_workers_share_one_rate_limit(node: str, redis_url: str) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), remove_on_complete=False)
    assert spec.rate_limit is not None and spec.rate_limit.max == 100
    total = 2000
    client = RedisClient(redis_url)
    events = f"{spec.prefix}:{spec.name}:events"
    # room in the event stream for every job's events (BullMQ trims it to 10,000 by default)
    await client.execute("HSET", f"{spec.prefix}:{spec.name}:meta", "opts.maxLenEvents", 100_000)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add_bulk([BulkJob("send-welcome", {"i": i}) for i in range(total)])
    limit = [str(spec.rate_limit.max), str(spec.rate_limit.duration_ms)]

    async def work(job: Job) -> dict[str, str]:
        return {"by": "python"}

    async with limiter_windows(redis_url, f"{spec.prefix}:{spec.name}:limiter") as windows:
        proc = await asyncio.create_subprocess_exec(
            node, str(NODE_DIR / "limited.js"), *where(spec, redis_url), *limit, str(total),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with running(spec, work, redis_url) as worker:
            out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    by_node = json.loads(out.decode().strip().splitlines()[-1])["processed"]
    assert by_node + worker.processed == total
    assert by_node > 100 and worker.processed > 100, (by_node, worker.processed)
    # Every start, Node's and ours, was counted in BullMQ's one limiter key, and no window of
    # it (1 s, opened by its first start) counted more than 100. (A sliding second is not
    # bounded by BullMQ: a Node worker alone starts up to 150-180 jobs in one, the end of one
    # window's burst and the start of the next; ours keep to both.)
    assert sum(windows) == total, f"starts the shared limiter did not count: {windows}"
    assert max(windows) <= 100, f"starts per limiter window: {windows}"
    assert min(windows[:-1]) >= 90, f"the shared limit throttled far below 100/s: {windows}"
    # every start is an `active` event that the fetching script itself wrote: its stream id is
    # Redis's clock when the job started
    entries = await client.execute("XRANGE", events, "-", "+")
    await client.close()
    starts = sorted(
        int(i.split("-")[0]) for i, fields in entries if fields[:2] == ["event", "active"]
    )
    assert len(starts) == total
    assert starts[-1] - starts[0] >= 19_000  # 2,000 starts at 100/s need 19 s at least
    await producer.close()


@asynccontextmanager
async def limiter_windows(redis_url: str, key: str) -> AsyncIterator[list[int]]:
    """The starts BullMQ's limiter counted in each of its windows, as Redis saw them.

    The limiter is a counter key: every start INCRs it, the first of a window sets its expiry,
    and its expiry ends the window (or BullMQ deletes it when a full window has 0 ms left). Redis's keyspace notifications of that key arrive in the
    order Redis ran them, so counting `incrby` between `expired` reads the limiter's own
    windows, with no clock involved. The list is filled when the block ends.
    """
    channel = f"__keyspace@0__:{key}"
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    was = (await redis.config_get("notify-keyspace-events"))["notify-keyspace-events"]
    await redis.config_set("notify-keyspace-events", "Kg$x")  # keyspace: generic, string, expired
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    windows: list[int] = []
    try:
        yield windows
        await redis.publish(channel, "end-of-test")  # delivered after every notification before it
        await asyncio.wait_for(_count_windows(pubsub, windows), 30)
    finally:
        await pubsub.aclose()
        await redis.config_set("notify-keyspace-events", was)
        await redis.aclose()


async def _count_windows(pubsub: aioredis.client.PubSub, windows: list[int]) -> None:
    count = 0
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        if message["data"] == "end-of-test":
            break
        if message["data"] in ("expired", "del"):  # BullMQ DELs it in its last ms (PTTL 0)
            windows.append(count)
            count = 0
        elif message["data"] == "incrby":
            count += 1
    windows.append(count)


# what each job asks of the worker (tests/node/queue_events.js does the same in Node)
EVENT_JOBS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "good": ({"progress": [40, {"step": "sent", "percent": 100}], "result": {"sent": True}}, {}),
    "flaky": ({"fail": "smtp busy", "failAttempts": 1, "result": {"sent": True}},
              {"attempts": 2, "backoff": {"type": "fixed", "delay": 20}}),
    "bad": ({"fail": "mailbox full"}, {"attempts": 2, "backoff": {"type": "fixed", "delay": 20}}),
    "fatal": ({"fail": "no such user", "unrecoverable": True}, {"attempts": 3}),
}  # fmt: skip
EVENT_FIELDS = ("prev", "data", "returnvalue", "failedReason", "attemptsMade")


async def planned(job: Job) -> Any:
    """Our worker doing what the job's data asks, as queue_events.js's Node worker does."""
    plan = job.data
    for step in plan.get("progress", []):
        await job.update_progress(step)
    if plan.get("fail") and job.attempts_made < plan.get("failAttempts", 99):
        raise (UnrecoverableError if plan.get("unrecoverable") else RuntimeError)(plan["fail"])
    return plan.get("result")


async def events_of_a_run(node: str, redis_url: str, python_worker: bool) -> dict[str, list[Any]]:
    """Each job's events as a Node QueueEvents listener saw them, worked by us or by Node."""
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)
    args = [str(NODE_DIR / "queue_events.js"), *where(spec, redis_url)]
    listener = await asyncio.create_subprocess_exec(
        node, *args, *([] if python_worker else ["node-worker"]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    producer = QueueProducer.connect(spec, redis_url)
    for job_id, (data, opts) in EVENT_JOBS.items():
        await producer.add("send-welcome", data, {"jobId": job_id, **opts})

    async def finished() -> bool:
        got = await counts(spec, redis_url)
        return got["completed"] + got["failed"] == len(EVENT_JOBS)

    if python_worker:
        async with running(spec, planned, redis_url):
            await eventually(finished)
    else:
        await eventually(finished)
    await producer.add("send-welcome", {}, {"jobId": "sentinel"})  # the listener stops here
    out, err = await asyncio.wait_for(listener.communicate(), 30)
    await producer.close()
    assert listener.returncode == 0, err.decode()
    by_job: dict[str, list[Any]] = {}
    for event in json.loads(out.decode().strip().splitlines()[-1]):
        kept = {k: event[k] for k in EVENT_FIELDS if k in event}
        by_job.setdefault(event["jobId"], []).append((event["event"], kept))
    return by_job


async def test_a_node_queue_events_listener_sees_our_jobs_events_as_a_node_workers(
    node: str, redis_url: str
) -> None:
    ours = await events_of_a_run(node, redis_url, python_worker=True)
    theirs = await events_of_a_run(node, redis_url, python_worker=False)
    assert ours == theirs
    good = [(e, f) for e, f in ours["good"] if e in ("progress", "completed")]
    assert good == [
        ("progress", {"data": 40}),
        ("progress", {"data": {"step": "sent", "percent": 100}}),
        ("completed", {"prev": "active", "returnvalue": {"sent": True}}),
    ]
    assert ours["bad"][-2:] == [
        ("failed", {"prev": "active", "failedReason": "mailbox full"}),
        ("retries-exhausted", {"attemptsMade": "2"}),
    ]
    assert ("delayed", {}) in ours["flaky"] and ours["flaky"][-1][0] == "completed"
    # an unrecoverable failure on attempt 1 of 3 is a failure, not exhausted retries (as Node)
    assert [e for e, _ in ours["fatal"]][-1] == "failed"
    assert "retries-exhausted" not in [e for e, _ in ours["fatal"]]


async def test_a_dead_lettered_job_retried_by_a_node_tool_leaves_the_dlq_when_we_complete_it(
    node: str, redis_url: str
) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", {"to": "full@example.com"}, {"jobId": "full-1"})
    mailbox_up = asyncio.Event()

    async def send(job: Job) -> str:
        if not mailbox_up.is_set():
            raise UnrecoverableError(f"mailbox of {job.data['to']} is full")
        return "sent"

    admin = QueueAdmin(spec, redis_url)
    async with running(spec, send, redis_url):
        await eventually(lambda: _has(spec, redis_url, "failed", 1))
        assert (await admin.counts()).dlq == 1
        mailbox_up.set()
        assert await run_node(node, "retry.js", *where(spec, redis_url), "full-1") == {
            "retried": "full-1"
        }  # what bull-board's Retry button does
        await eventually(lambda: _has(spec, redis_url, "completed", 1))
    assert (await admin.counts()).dlq == 0  # completed: no longer a job that failed for good
    await admin.close()
    await producer.close()


async def test_a_dead_lettered_job_retried_from_bull_board_and_completed_by_a_node_worker_leaves_the_dlq(
    node: str, redis_url: str
) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", {"to": "a@example.com"}, {"jobId": "kept-done"})
    await producer.add("send-welcome", {"to": "b@example.com"},
                       {"jobId": "gone-done", "removeOnComplete": True})  # fmt: skip
    await producer.add("send-welcome", {"to": "c@example.com"}, {"jobId": "cleaned"})

    async def send(job: Job) -> str:
        raise UnrecoverableError(f"mailbox of {job.data['to']} is full")

    admin = QueueAdmin(spec, redis_url)
    try:
        async with running(spec, send, redis_url):
            await eventually(lambda: _has(spec, redis_url, "failed", 3))
        assert (await admin.counts()).dlq == 3
        for job_id in ("kept-done", "gone-done"):  # bull-board's Retry button
            await run_node(node, "retry.js", *where(spec, redis_url), job_id)
        done = await run_node(node, "worker.js", *where(spec, redis_url), "2")
        assert sorted(j["id"] for j in done) == ["gone-done", "kept-done"]
        assert await admin.queue.getJobState("kept-done") == "completed"
        assert await admin.queue.getJob("gone-done") is None  # removed on completion
        with pytest.raises(JobNotRetryableError, match="completed"):  # not re-driven as a DLQ job
            await admin.retry("kept-done")
        # the failed job of a dead letter cleaned away by retention: the entry is its record
        assert await admin.clean("failed", 0) == ["cleaned"]
        depths = await queue_depths(admin.client, {spec.name: spec})  # the /metrics gauge
        assert depths[(spec.name, "dlq")] == 1
        assert [e.id for e in await admin.dead_letters()] == ["cleaned"]  # /ops, the CLI
        assert (await admin.counts()).dlq == 1
    finally:
        await admin.close()
        await producer.close()


async def test_node_tools_see_our_running_worker_as_a_worker_of_the_queue(
    node: str, redis_url: str
) -> None:
    spec = unique_spec(Settings(redis_url=redis_url))

    async def idle(job: Job) -> None:
        return None

    async with running(spec, idle, redis_url) as worker:

        async def listed() -> list[str]:
            seen = await run_node(node, "inspect.js", *where(spec, redis_url))
            return list(seen["workers"])

        names = await eventually(listed)  # bull-board shows these instead of "No workers"
        assert len(names) == 1 and names[0].endswith(f":w:{worker.name}:{worker.id}")
    assert await listed() == []
