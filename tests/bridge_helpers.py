"""Helpers shared by the bridge tests: unique specs, a running worker, job starts, BullMQ reads."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bullmq import Queue

from app import embedded
from bridge.connect import bullmq_connection
from bridge.job import Job
from bridge.runtime import BackoffStrategy, BridgeWorker
from bridge.specs import QueueSpec
from orderflow.settings import Settings
from tests.helpers import eventually
from workers.queues import email_spec

__all__ = ["OwnRedis", "bull_queue", "counts", "eventually", "running", "unique_spec"]


def unique_spec(settings: Settings, **changes: Any) -> QueueSpec:
    """The email spec under a prefix and queue name of this test's own (on a Redis Cluster the
    prefix is a hash tag, as the cluster needs)."""
    tag = uuid.uuid4().hex[:10]
    prefix = f"{{t{tag}}}" if settings.redis_cluster else f"t{tag}"
    return email_spec(settings).with_(prefix=prefix, name=f"email-{tag}", **changes)


@asynccontextmanager
async def running(
    spec: QueueSpec,
    processor: Callable[[Job], Awaitable[Any]],
    redis_url: str,
    grace: float = 5.0,
    backoff_strategy: BackoffStrategy | None = None,
) -> AsyncIterator[BridgeWorker]:
    """A BridgeWorker running in the background for the block, stopped gracefully after."""
    stop = asyncio.Event()
    worker = BridgeWorker(spec, processor, redis_url, backoff_strategy=backoff_strategy)
    task = asyncio.create_task(worker.run(stop, grace))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, grace + 15)


def bull_queue(spec: QueueSpec, redis_url: str) -> Queue:
    """The Python port's Queue on the same keys, to read jobs as any BullMQ client would."""
    return Queue(spec.name, {"connection": bullmq_connection(redis_url), "prefix": spec.prefix})


async def counts(spec: QueueSpec, redis_url: str) -> dict[str, int]:
    """BullMQ's job counts of the queue."""
    queue = bull_queue(spec, redis_url)
    try:
        return dict(await queue.getJobCounts())
    finally:
        await queue.close()


class OwnRedis:
    """A redis-server of one test's own, AOF on as in production, that can be restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = f"redis://127.0.0.1:{embedded.free_port()}/0"
        self.proc = self._start()

    def _start(self) -> subprocess.Popen:
        return embedded.start_redis(
            url=self.url, data_dir=self.folder / "redis", log=self.folder / "redis.log"
        )

    def restart(self) -> None:
        """SIGTERM (redis-server writes its AOF and exits), then start it on the same files."""
        embedded.stop(self.proc)
        self.proc = self._start()

    def kill(self) -> None:
        """SIGKILL: no chance to write anything."""
        self.proc.kill()
        self.proc.wait(10)

    def start(self) -> None:
        """Start again on the same files (after kill)."""
        self.proc = self._start()

    def stop(self) -> None:
        embedded.stop(self.proc)
