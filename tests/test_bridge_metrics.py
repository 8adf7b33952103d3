"""BullMQ's per-minute metrics (`<queue>:metrics:completed|failed`): our workers write them as
Node BullMQ 6.7 does with `metrics: {maxDataPoints}`, Node's getMetrics reads them, and so does
the admin reader the dashboard charts come from."""

from __future__ import annotations

from bullmq import UnrecoverableError

from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.redis_client import RedisClient
from bridge.scripts import Keys
from orderflow.settings import Settings
from tests.bridge_helpers import counts, eventually, running, unique_spec
from tests.test_bridge_node import node, run_node, where

__all__ = ["node"]  # the fixture, shared with the other interop tests


async def test_node_get_metrics_reads_the_completed_and_failed_jobs_of_our_worker(
    node: str, redis_url: str
) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None, attempts=1)
    producer = QueueProducer.connect(spec, redis_url)
    for i in range(12):
        await producer.add("send-welcome", {"to": f"u{i}@example.com"}, {"jobId": f"m-{i}"})

    async def work(job: Job) -> str:
        if int(job.id.split("-")[1]) % 4 == 0:  # m-0, m-4, m-8
            raise UnrecoverableError(f"mailbox {job.data['to']} does not exist")
        return "sent"

    async def settled() -> bool:
        c = await counts(spec, redis_url)
        return c.get("completed") == 9 and c.get("failed") == 3

    async with running(spec, work, redis_url):
        await eventually(settled)
    await producer.close()

    seen = await run_node(node, "metrics.js", *where(spec, redis_url))
    assert seen["completed"]["meta"]["count"] == 9
    assert seen["failed"]["meta"]["count"] == 3
    assert f'bullmq_job_completed_total{{queue="{spec.name}"}} 9' in seen["prometheus"]
    # BullMQ keeps the open minute as count - prevCount until the next minute's first job
    client = RedisClient(redis_url, name="test:metrics")
    keys = Keys(spec.prefix, spec.name)
    meta = await client.execute("HGETALL", keys["metrics:completed"])
    await client.close()
    assert meta  # written at all: the worker passes maxMetricsSize as Node's `metrics` option
