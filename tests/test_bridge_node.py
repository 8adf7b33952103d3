"""Interop with Node BullMQ 6.7 (tests/node): the same queues, in both directions."""

from __future__ import annotations

import asyncio
import json
import shutil
from bisect import bisect_left
from pathlib import Path
from typing import Any

import pytest
from bullmq import UnrecoverableError
from sqlalchemy.engine import Engine

from app.smtp_sink import SmtpSink
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
        "messageId": message_id_for(spec.name, "welcome-neha"),
    }
    await client.close()


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
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add_bulk([BulkJob("send-welcome", {"i": i}) for i in range(total)])
    limit = [str(spec.rate_limit.max), str(spec.rate_limit.duration_ms)]
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "limited.js"), *where(spec, redis_url), *limit, str(total),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip

    async def work(job: Job) -> dict[str, str]:
        return {"by": "python"}

    async with running(spec, work, redis_url) as worker:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    by_node = json.loads(out.decode().strip().splitlines()[-1])["processed"]
    assert by_node + worker.processed == total
    assert by_node > 100 and worker.processed > 100, (by_node, worker.processed)
    client = RedisClient(redis_url)
    ids = await client.execute("ZRANGE", f"{spec.prefix}:{spec.name}:completed", 0, -1)
    stamps = await client.pipeline(
        [["HGET", f"{spec.prefix}:{spec.name}:{job_id}", "processedOn"] for job_id in ids]
    )
    await client.close()
    starts = sorted(int(ms) for ms in stamps)
    assert len(starts) == total
    # BullMQ's limiter counts starts in windows of 1 s, each opened by its first start; Node's
    # processedOn is its clock when it sent the fetch, ours Redis's when the fetch ran. (A
    # sliding second is not bounded by BullMQ: a Node worker alone starts up to 150-180 jobs
    # in one, the end of one window's burst and the start of the next; ours keep to both.)
    windows = limiter_windows(starts, spec.rate_limit.duration_ms)
    print("starts per limiter window:", windows)
    assert max(windows) <= 100
    assert min(windows[:-1]) >= 90, "the shared limit throttled far below 100/s"
    assert starts[-1] - starts[0] >= 19_000  # 2,000 starts at 100/s need 19 s at least
    await producer.close()


def limiter_windows(starts: list[int], duration_ms: int) -> list[int]:
    """Starts per window as BullMQ's limiter opens them: at a start, for duration_ms."""
    counts, i = [], 0
    while i < len(starts):
        end = bisect_left(starts, starts[i] + duration_ms)
        counts.append(end - i)
        i = end
    return counts
