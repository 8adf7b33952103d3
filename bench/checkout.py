"""Checkout latency, one order at a time: in one call (update-with-start) against start-then-
checkout, and a no-op workflow's start-to-result on the same server as the baseline.

Starts its own file-backed Temporal dev server, a redis-server and a SQLite database in a
temporary folder, runs the real workers in this process on the simulated gateway, and prints
p50/p99 of each way in milliseconds, their ratios, and this process's CPU per checkout.
- one call: `OrderClient.checkout` (the start and the `placed` update in one request to
  Temporal, then the gateway's checkout);
- start-then-checkout: `start_order`, the status query until PENDING_PAYMENT, then
  `create_checkout` (what a storefront calling twice gets, without its network in between).
Usage: python bench/checkout.py [--orders N] [--rounds R] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlmodel import Session
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import embedded
from app.client import OrderClient
from app.temporal import connect
from bench.noop_workflow import NoopWorkflow
from orderflow import codec
from orderflow.contracts.mail import EMAIL_QUEUE
from orderflow.db import Product, make_engine
from orderflow.schema import upgrade
from orderflow.settings import Settings
from workers.queues import producer_for
from workers.temporal import Dependencies, build_workers, workflow_runner

NOOP_QUEUE = "bench-noop"
SKU = "BENCH-CHECKOUT"


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) of samples, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def timed(n: int, one: Callable[[int], Awaitable[object]]) -> tuple[list[float], float]:
    """Run `one` n times, one after the other: each latency in ms, and CPU seconds in all."""
    latencies = []
    cpu = time.process_time()
    for i in range(n):
        started = time.perf_counter()
        await one(i)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, time.process_time() - cpu


async def main() -> None:
    """Alternate the three ways in rounds on one server; print percentiles and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=150, help="checkouts per way, in all")
    parser.add_argument("--rounds", type=int, default=3, help="alternating batches of orders/R")
    parser.add_argument("--json", action="store_true", help="print one JSON line of results")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="orderflow-bench-checkout-"))
    port = embedded.free_port()
    temporal = embedded.start_temporal(
        port=port, ui_port=None, db_file=tmp / "temporal.db", log=tmp / "temporal.log"
    )
    redis_url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    redis = embedded.start_redis(url=redis_url, data_dir=tmp / "redis", log=tmp / "redis.log")
    try:
        settings = Settings(data_dir=tmp, redis_url=redis_url, temporal_address=f"127.0.0.1:{port}")
        engine = make_engine(settings.db_url)
        upgrade(engine)
        with Session(engine) as session:
            session.add(Product(sku=SKU, name="bench", price=10_000, on_hand=10 * args.orders))
            session.commit()
        client = await connect(settings)
        email_queue = producer_for(settings, EMAIL_QUEUE)
        workers = build_workers(
            client, settings, Dependencies.from_settings(settings, engine, email_queue)
        )
        workers.append(
            Worker(
                client,
                task_queue=NOOP_QUEUE,
                workflows=[NoopWorkflow],
                workflow_runner=workflow_runner(settings),
            )
        )
        tasks = [asyncio.create_task(w.run()) for w in workers]
        orders = OrderClient(client, settings, engine)
        tag = uuid.uuid4().hex[:6]

        async def noop(i: int) -> None:
            await client.execute_workflow(
                NoopWorkflow.run, id=f"noop-{tag}-{uuid.uuid4().hex}", task_queue=NOOP_QUEUE
            )

        async def one_call(i: int) -> None:
            order_id = f"one-{tag}-{uuid.uuid4().hex[:8]}"
            await orders.checkout(order_id, "bench", "bench@example.com", [(SKU, 1)])

        async def two_calls(i: int) -> None:
            order_id = f"two-{tag}-{uuid.uuid4().hex[:8]}"
            await orders.start_order(order_id, "bench", "bench@example.com", [(SKU, 1)])
            while (await orders.status(order_id)).status == "NEW":
                pass  # the storefront's second call, made as soon as the order can answer it
            await orders.create_checkout(order_id)

        ways: dict[str, Callable[[int], Awaitable[object]]] = {
            "noop": noop,
            "one_call": one_call,
            "start_then_checkout": two_calls,
        }
        await timed(5, one_call)  # warm the workers' caches and the connections
        await timed(5, two_calls)
        latencies: dict[str, list[float]] = {name: [] for name in ways}
        cpu: dict[str, float] = dict.fromkeys(ways, 0.0)
        per_round = max(1, args.orders // args.rounds)
        for _ in range(args.rounds):
            for name, way in ways.items():
                found, spent = await timed(per_round, way)
                latencies[name] += found
                cpu[name] += spent
        for worker in workers:
            await worker.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        await email_queue.close()
    finally:
        embedded.stop(temporal)
        embedded.stop(redis)
    report(args, latencies, cpu)


def report(
    args: argparse.Namespace, latencies: dict[str, list[float]], cpu: dict[str, float]
) -> None:
    """Print (or emit as JSON) p50/p99, the ratios and the CPU per checkout."""
    found = {
        name: {
            "p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(percentile(samples, 99), 2),
            "cpu_ms": round(cpu[name] * 1000 / len(samples), 2),
            "n": len(samples),
        }
        for name, samples in latencies.items()
    }
    one, two, noop = found["one_call"], found["start_then_checkout"], found["noop"]
    ratios = {
        "one_call_p50_over_start_then_checkout_p50": round(one["p50_ms"] / two["p50_ms"], 3),
        "one_call_p50_over_noop_p50": round(one["p50_ms"] / noop["p50_ms"], 3),
        "start_then_checkout_p50_over_noop_p50": round(two["p50_ms"] / noop["p50_ms"], 3),
    }
    if args.json:
        print(json.dumps({"ways": found, "ratios": ratios}))
        return
    for name, numbers in found.items():
        print(
            f"{name:>21}: p50 {numbers['p50_ms']:7.2f} ms  p99 {numbers['p99_ms']:7.2f} ms  "
            f"CPU {numbers['cpu_ms']:6.2f} ms (this process)  n={numbers['n']}"
        )
    for name, value in ratios.items():
        print(f"{name}: {value}×")


if __name__ == "__main__":
    # customer data encrypted, as a shop runs it; child processes inherit the same key
    os.environ.setdefault("ORDERFLOW_CODEC_KEY", codec.new_key("bench").spec())
    asyncio.run(main())
