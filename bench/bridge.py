"""Bridge throughput: N no-op jobs through our worker runtime and through Node BullMQ, same Redis.

Usage: python bench/bridge.py [--jobs N] [--concurrency C] [--redis-url URL] [--rounds R] [--json]
Without --redis-url a private redis-server is started (AOF on, noeviction, as in production).
Prints enqueue (addBulk) and processing jobs/s for both, our/Node ratios and the worker's CPU
per 1,000 jobs; rounds alternate which side goes first (the machine's load drifts). With
--json, one line: {"bench": "bridge", ..., "rounds": [...]}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import embedded
from bridge.job import Job
from bridge.producer import BulkJob, QueueProducer
from bridge.redis_client import RedisClient
from bridge.runtime import BridgeWorker
from bridge.specs import METRICS_MAX_DATA_POINTS
from orderflow.settings import Settings
from workers.queues import email_spec

NODE_DIR = Path(__file__).resolve().parents[1] / "tests" / "node"
BATCH = 1000  # jobs per addBulk call, on both sides
# our workers write BullMQ's per-minute metrics (QueueSpec.metrics_max_data_points): Node's bench
# worker gets the same `metrics` option, so Redis does the same work per job for both
METRICS_POINTS = METRICS_MAX_DATA_POINTS


async def python_run(redis_url: str, jobs: int, concurrency: int) -> tuple[float, float, float]:
    """(enqueue jobs/s, processed jobs/s, CPU ms per 1,000 jobs) of our producer and worker."""
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
    t0, cpu0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(worker.run(stop, 5))
    await done.wait()
    process = jobs / (time.perf_counter() - t0)
    cpu_per_1k = (time.process_time() - cpu0) * 1000 / (jobs / 1000)
    stop.set()
    await task
    await producer.client.execute("DEL", *[f"{spec.prefix}:{spec.name}:{k}" for k in
                                           ("id", "events", "meta", "marker", "stalled-check")])  # fmt: skip
    await producer.close()
    return enqueue, process, cpu_per_1k


def node_run(redis_url: str, jobs: int, concurrency: int) -> tuple[float, float, float]:
    """(enqueue jobs/s, processed jobs/s, CPU ms per 1,000 jobs) of Node BullMQ (bench.js)."""
    if not (NODE_DIR / "node_modules" / "bullmq").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    out = subprocess.run(
        ["node", str(NODE_DIR / "bench.js"), redis_url, "bull",
         f"bench-node-{uuid.uuid4().hex[:8]}", str(jobs), str(concurrency),
         str(METRICS_POINTS)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    figures = json.loads(out.strip().splitlines()[-1])
    return figures["enqueue"], figures["process"], figures["cpuMsPer1k"]


def redis_cpu(redis_url: str) -> float:
    """Seconds of CPU the redis-server has used so far (INFO cpu)."""

    async def read() -> float:
        client = RedisClient(redis_url)
        info = str(await client.execute("INFO", "cpu"))
        await client.close()
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])

    return asyncio.run(read())


def with_redis_cpu(
    redis_url: str, jobs: int, run: Callable[[], tuple[float, float, float]]
) -> tuple[tuple[float, float, float], float]:
    """`run()`'s figures, and Redis's CPU ms per 1,000 jobs while it ran (enqueue + process)."""
    before = redis_cpu(redis_url)
    figures = run()
    return figures, (redis_cpu(redis_url) - before) * 1000 / (jobs / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON line of results")
    args = parser.parse_args()
    if shutil.which("node") is None:
        sys.exit("node is needed for the comparison")
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    url = args.redis_url or f"redis://127.0.0.1:{embedded.free_port()}/0"
    server = None if args.redis_url else embedded.start_redis(
        url=url, data_dir=folder, log=folder / "redis.log")  # fmt: skip
    rounds = []
    try:
        for i in range(args.rounds):
            node_side = partial(node_run, url, args.jobs, args.concurrency)

            def our_side() -> tuple[float, float, float]:
                return asyncio.run(python_run(url, args.jobs, args.concurrency))

            if i % 2 == 0:
                node, node_redis = with_redis_cpu(url, args.jobs, node_side)
                ours, our_redis = with_redis_cpu(url, args.jobs, our_side)
            else:
                ours, our_redis = with_redis_cpu(url, args.jobs, our_side)
                node, node_redis = with_redis_cpu(url, args.jobs, node_side)
            row = {
                "node_process": round(node[1]), "ours_process": round(ours[1]),
                "process_ratio": round(ours[1] / node[1], 3),
                "node_enqueue": round(node[0]), "ours_enqueue": round(ours[0]),
                "enqueue_ratio": round(ours[0] / node[0], 3),
                "node_cpu_ms_per_1k": round(node[2], 1), "ours_cpu_ms_per_1k": round(ours[2], 1),
                "node_redis_cpu_ms_per_1k": round(node_redis, 1),
                "ours_redis_cpu_ms_per_1k": round(our_redis, 1),
                "load1": round(os.getloadavg()[0], 2),
            }  # fmt: skip
            rounds.append(row)
            if args.json:
                continue
            print(f"{args.jobs} no-op jobs, concurrency {args.concurrency}, one process each"
                  f" (load average {row['load1']})")  # fmt: skip
            print(f"  process  node {node[1]:8.0f}/s   ours {ours[1]:8.0f}/s   "
                  f"ratio {row['process_ratio']:.2f}x   CPU per 1k jobs: node "
                  f"{node[2]:.0f} ms, ours {ours[2]:.0f} ms; Redis's CPU per 1k jobs (enqueue +"
                  f" process): node {node_redis:.0f} ms, ours {our_redis:.0f} ms")  # fmt: skip
            print(f"  enqueue  node {node[0]:8.0f}/s   ours {ours[0]:8.0f}/s   "
                  f"ratio {row['enqueue_ratio']:.2f}x  (addBulk, {BATCH} per call)")  # fmt: skip
        if args.json:
            print(json.dumps({"bench": "bridge", "jobs": args.jobs,
                              "concurrency": args.concurrency, "cpus": os.cpu_count(),
                              "rounds": rounds}))  # fmt: skip
    finally:
        if server is not None:
            embedded.stop(server)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
