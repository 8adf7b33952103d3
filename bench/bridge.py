"""Bridge throughput: N no-op jobs through our worker runtime and through Node BullMQ, same Redis.

Usage: python bench/bridge.py [--jobs N] [--concurrency C] [--redis-url URL]
Without --redis-url a private redis-server is started (AOF on, noeviction, as in production).
Prints enqueue (addBulk) and processing jobs/s for both, and our/Node ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import embedded
from bridge.job import Job
from bridge.producer import BulkJob, QueueProducer
from bridge.runtime import BridgeWorker
from bridge.specs import email_spec
from orderflow.settings import Settings

NODE_DIR = Path(__file__).resolve().parents[1] / "tests" / "node"
BATCH = 1000  # jobs per addBulk call, on both sides


async def python_run(redis_url: str, jobs: int, concurrency: int) -> tuple[float, float]:
    """(enqueue jobs/s, processed jobs/s) of our producer and worker runtime."""
    tag = uuid.uuid4().hex[:8]
    spec = email_spec(Settings(redis_url=redis_url)).with_(
        name=f"bench-py-{tag}", concurrency=concurrency, rate_limit=None,
        remove_on_complete=True, timeout_seconds=None,
    )  # fmt: skip
    producer = QueueProducer.connect(spec, redis_url)
    t0 = time.perf_counter()
    for start in range(0, jobs, BATCH):
        batch = [BulkJob("noop", {"i": i}) for i in range(start, min(jobs, start + BATCH))]
        await producer.add_bulk(batch)
    enqueue = jobs / (time.perf_counter() - t0)
    done = asyncio.Event()
    processed = 0

    async def noop(job: Job) -> None:
        nonlocal processed
        processed += 1
        if processed == jobs:
            done.set()

    stop = asyncio.Event()
    worker = BridgeWorker(spec, noop, redis_url)
    t0 = time.perf_counter()
    task = asyncio.create_task(worker.run(stop, 5))
    await done.wait()
    process = jobs / (time.perf_counter() - t0)
    stop.set()
    await task
    await producer.client.execute("DEL", *[f"{spec.prefix}:{spec.name}:{k}" for k in
                                           ("id", "events", "meta", "marker", "stalled-check")])  # fmt: skip
    await producer.close()
    return enqueue, process


def node_run(redis_url: str, jobs: int, concurrency: int) -> tuple[float, float]:
    """(enqueue jobs/s, processed jobs/s) of Node BullMQ (tests/node/bench.js)."""
    if not (NODE_DIR / "node_modules" / "bullmq").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    out = subprocess.run(
        ["node", str(NODE_DIR / "bench.js"), redis_url, "bull",
         f"bench-node-{uuid.uuid4().hex[:8]}", str(jobs), str(concurrency)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    figures = json.loads(out.strip().splitlines()[-1])
    return figures["enqueue"], figures["process"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("node") is None:
        sys.exit("node is needed for the comparison")
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    url = args.redis_url or f"redis://127.0.0.1:{embedded.free_port()}/0"
    server = None if args.redis_url else embedded.start_redis(
        url=url, data_dir=folder, log=folder / "redis.log")  # fmt: skip
    try:
        for _ in range(args.rounds):
            node_enq, node_proc = node_run(url, args.jobs, args.concurrency)
            py_enq, py_proc = asyncio.run(python_run(url, args.jobs, args.concurrency))
            print(f"{args.jobs} no-op jobs, concurrency {args.concurrency}, one process each")
            print(f"  process  node {node_proc:8.0f}/s   ours {py_proc:8.0f}/s   "
                  f"ratio {py_proc / node_proc:.2f}x")  # fmt: skip
            print(f"  enqueue  node {node_enq:8.0f}/s   ours {py_enq:8.0f}/s   "
                  f"ratio {py_enq / node_enq:.2f}x  (addBulk, {BATCH} per call)")  # fmt: skip
    finally:
        if server is not None:
            embedded.stop(server)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
