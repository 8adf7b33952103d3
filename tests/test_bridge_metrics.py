"""BullMQ's per-minute metrics (`<queue>:metrics:completed|failed`): our workers write them as
Node BullMQ 6.7 does with `metrics: {maxDataPoints}`, Node's getMetrics reads them, and so does
the admin reader the dashboard charts come from."""

from __future__ import annotations

import time

from bullmq import UnrecoverableError

from bridge.admin import MINUTE_MS, QueueAdmin, per_minute, percentile
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

    admin = QueueAdmin(spec, redis_url)
    try:
        series = await admin.throughput(minutes=60, now_ms=int(time.time() * 1000))
        timed = await admin.processing_times()
    finally:
        await admin.close()
    assert len(series.minutes) == 60
    assert sum(series.completed) == 9 and sum(series.failed) == 3
    assert series.completed[-1] + series.completed[-2] == 9  # this minute, or the one before
    assert timed.jobs == 9 and set(timed.percentiles) == {50, 90, 99}
    assert 0 <= timed.percentiles[50] <= timed.percentiles[99] <= timed.max_ms < 10_000


def test_per_minute_reads_the_open_minute_and_the_pushed_ones_with_their_gaps() -> None:
    # as collectMetrics leaves it: 4 jobs in minute 100, none in 101-102, 7 in 103, and
    # 2 so far in minute 104 (count 13, prevCount 11, prevTS inside minute 104)
    meta = ["13", str(104 * MINUTE_MS + 5_000), "11"]
    data = ["7", "0", "0", "4"]
    assert per_minute(meta, data, 99, 7) == [0, 4, 0, 0, 7, 2, 0]
    assert per_minute([None, None, None], [], 99, 3) == [0, 0, 0]  # never written
    assert [percentile([10, 20, 30, 40], p) for p in (50, 90, 99)] == [20, 40, 40]
