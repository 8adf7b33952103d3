"""Queue depth over time: every bridge worker records its queue's waiting, delayed, prioritized
and active counts once a minute (`<prefix>:<queue>:orderflow-depth`), kept an hour; the admin
reader the `/ops` depth chart comes from reads them back. The sampler is driven with explicit
timestamps: no test waits a real minute."""

from __future__ import annotations

import asyncio
import time

from bridge.admin import MINUTE_MS, QueueAdmin
from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.redis_client import RedisClient
from bridge.runtime import BridgeWorker
from bridge.scripts import DEPTH_KEY, Keys
from orderflow.settings import Settings
from tests.bridge_helpers import eventually, unique_spec

T0 = 1_790_000_040_000  # a minute's start (explicit: the sampler takes the time it is given)


async def sent(job: Job) -> str:
    return "sent"


async def test_depth_samples_are_written_per_minute_and_trimmed_to_the_last_hour(
    redis_url: str,
) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    for i in range(3):
        await producer.add("send-welcome", {"to": f"w{i}@example.com"})
    for i in range(2):
        await producer.add("send-welcome", {"to": f"d{i}@example.com"}, {"delay": 600_000})
    await producer.add("send-welcome", {"to": "p@example.com"}, {"priority": 5})
    worker = BridgeWorker(spec, sent, redis_url)  # not run: its sampler is called directly
    admin = QueueAdmin(spec, redis_url)
    raw = RedisClient(redis_url)
    key = Keys(spec.prefix, spec.name)[DEPTH_KEY]
    try:
        first = await worker.sample_depth(T0 + 5_000)
        assert first == {"waiting": 3, "paused": 0, "active": 0, "delayed": 2, "prioritized": 1}
        assert await raw.execute("HKEYS", key) == [str(T0)]  # the field is the minute's start
        await worker.sample_depth(T0 + 30 * MINUTE_MS)
        await worker.sample_depth(T0 + 59 * MINUTE_MS + 59_000)
        history = await admin.depth_history(60, now_ms=T0 + 59 * MINUTE_MS + 59_999)
        assert [s.minute for s in history.samples] == [T0, T0 + 30 * MINUTE_MS, T0 + 59 * MINUTE_MS]
        assert [s.depth for s in history.samples] == [6, 6, 6]
        assert history.minutes[0] == T0 and len(history.minutes) == 60
        # an hour after the first sample's minute, that minute leaves the hash and the window
        await worker.sample_depth(T0 + 60 * MINUTE_MS)
        fields = sorted(int(f) for f in await raw.execute("HKEYS", key))
        assert fields == [T0 + 30 * MINUTE_MS, T0 + 59 * MINUTE_MS, T0 + 60 * MINUTE_MS]
        assert 0 < int(await raw.execute("PTTL", key)) <= 60 * MINUTE_MS  # gone an hour after
        later = await admin.depth_history(60, now_ms=T0 + 60 * MINUTE_MS)
        assert [s.minute for s in later.samples] == fields
        # a field another writer left there is skipped by the reader and trimmed by the sampler
        await raw.execute("HSET", key, "not-a-minute", "{")
        assert len((await admin.depth_history(60, now_ms=T0 + 60 * MINUTE_MS)).samples) == 3
        await worker.sample_depth(T0 + 60 * MINUTE_MS)
        assert await raw.execute("HEXISTS", key, "not-a-minute") == 0
    finally:
        await producer.close()
        await admin.close()
        await raw.close()
        await worker.client.close()


async def test_two_workers_sampling_in_the_same_minute_leave_one_sample(redis_url: str) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    one, two = BridgeWorker(spec, sent, redis_url), BridgeWorker(spec, sent, redis_url)
    admin = QueueAdmin(spec, redis_url)
    try:
        for i in range(3):
            await producer.add("send-welcome", {"to": f"a{i}@example.com"})
        await one.sample_depth(T0 + 1_000)
        for i in range(2):
            await producer.add("send-welcome", {"to": f"b{i}@example.com"})
        await two.sample_depth(T0 + 40_000)
        history = await admin.depth_history(60, now_ms=T0 + 59_000)
        assert [(s.minute, s.waiting) for s in history.samples] == [(T0, 5)]  # the last writer's
    finally:
        await producer.close()
        await admin.close()
        await one.client.close()
        await two.client.close()


async def test_a_running_worker_records_the_depth_on_its_own(redis_url: str) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)
    worker = BridgeWorker(spec, sent, redis_url, depth_every=0.05)
    admin = QueueAdmin(spec, redis_url)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, 5.0))

    async def sampled() -> bool:
        history = await admin.depth_history(60, now_ms=int(time.time() * 1000))
        return bool(history.samples) and all(s.depth == 0 for s in history.samples)

    try:
        await eventually(sampled, what="the worker's own depth sample")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await admin.close()
