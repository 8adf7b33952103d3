"""End-to-end orders/s (start → pay → CONFIRMED) against no-op workflows/s on the same server.

Starts its own file-backed Temporal dev server (as `orderflow run` does), a redis-server and a
SQLite database in a temporary folder, runs the real workers in this process, and prints both
rates and their ratio, CPU per workflow (server process and this one) and the count of
"workflow task duration exceeded" warnings the SDK core logged.
Usage: python bench/orders.py [--orders N] [--in-flight C] [--rounds R] [--memory] [--traced]
[--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

from sqlmodel import Session, col, func, select
from temporalio.client import Client
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import embedded
from app.client import OrderClient
from app.temporal import connect
from bench.noop_workflow import NoopWorkflow
from orderflow.contracts.mail import EMAIL_QUEUE
from orderflow.contracts.order import PaymentReceived
from orderflow.db import Order, Product, make_engine, reader
from orderflow.schema import upgrade
from orderflow.settings import Settings
from workers.queues import producer_for
from workers.temporal import Dependencies, build_workers, workflow_runner

NOOP_QUEUE = "bench-noop"
SLOW_TASK_WARNING = "TMPRL1104"  # core's "Workflow task duration exceeded N seconds"


class CoreWarnings(logging.Handler):
    """Counts the SDK core's slow-workflow-task warnings (and still shows every core warning)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.slow_tasks = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Count and print one forwarded core log line."""
        message = record.getMessage()
        if SLOW_TASK_WARNING in message:
            self.slow_tasks += 1
        print(f"core: {message}", file=sys.stderr)


def core_runtime(warnings: CoreWarnings) -> Runtime:
    """A runtime whose core warnings reach `warnings` (the default only prints them)."""
    log = logging.getLogger("bench.core")
    log.propagate = False
    log.addHandler(warnings)
    log.setLevel(logging.WARNING)
    filter = TelemetryFilter(core_level="WARN", other_level="ERROR")
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=filter, forwarding=LogForwardingConfig(logger=log))
        )
    )


def cpu_seconds(server_pid: int) -> tuple[float, float]:
    """(server, this process) CPU seconds so far, from /proc and os.times."""
    fields = Path(f"/proc/{server_pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    mine = os.times()
    return (int(fields[11]) + int(fields[12])) / tick, mine.user + mine.system


async def bounded(n: int, in_flight: int, one: object) -> float:
    """Run `one(i)` for i < n with at most `in_flight` at a time; returns the seconds taken."""
    sem = asyncio.Semaphore(in_flight)

    async def slot(i: int) -> None:
        async with sem:
            await one(i)  # type: ignore[operator]

    started = time.perf_counter()
    await asyncio.gather(*(slot(i) for i in range(n)))
    return time.perf_counter() - started


async def main() -> None:
    """Run the no-op baseline and the orders on one server; print rates and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating no-op and order batches (of orders/R)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="in-memory dev server instead of file-backed"
    )
    parser.add_argument(
        "--traced", action="store_true", help="the production client: tracing interceptor on"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line of results")
    args = parser.parse_args()
    warnings = CoreWarnings()

    tmp = Path(tempfile.mkdtemp(prefix="orderflow-bench-"))
    port = embedded.free_port()
    temporal = embedded.start_temporal(
        port=port,
        ui_port=None,
        db_file=None if args.memory else tmp / "temporal.db",
        log=tmp / "temporal.log",
    )
    redis_url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    redis = embedded.start_redis(url=redis_url, data_dir=tmp / "redis", log=tmp / "redis.log")
    try:
        settings = Settings(data_dir=tmp, redis_url=redis_url, temporal_address=f"127.0.0.1:{port}")
        engine = make_engine(settings.db_url)
        upgrade(engine)
        sku = "BENCH-SKU"
        with Session(engine) as session:
            session.add(
                Product(sku=sku, name="bench", price=10_000, on_hand=10 * args.orders + 1000)
            )
            session.commit()
        runtime = core_runtime(warnings)
        if args.traced:
            client = await connect(settings, runtime=runtime)
        else:
            client = await Client.connect(settings.temporal_address, runtime=runtime)
        email_queue = producer_for(settings, EMAIL_QUEUE)
        workers = build_workers(
            client, settings, Dependencies.from_settings(settings, engine, email_queue)
        )
        noop_worker = Worker(
            client,
            task_queue=NOOP_QUEUE,
            workflows=[NoopWorkflow],
            workflow_runner=workflow_runner(settings),  # the same runner as the orders worker
        )
        workers.append(noop_worker)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        orders = OrderClient(client, settings, engine)

        async def noop(i: int) -> None:
            await client.execute_workflow(
                NoopWorkflow.run, id=f"noop-{uuid.uuid4().hex}", task_queue=NOOP_QUEUE
            )

        latencies: list[float] = []
        run_tag = uuid.uuid4().hex[:6]

        counter = iter(range(10**9))

        waiting: dict[str, asyncio.Future[None]] = {}
        tick = [0.05]  # the poller's interval: coarse under load, fine for the latency runs

        reads = reader(engine)

        async def watch_confirmations() -> None:
            """One poller for all in-flight orders, so waiting costs one query per tick."""
            while True:
                if waiting:
                    with Session(reads) as session:
                        done = session.exec(
                            select(Order.id).where(
                                col(Order.id).in_(list(waiting)), col(Order.status) == "CONFIRMED"
                            )
                        ).all()
                    for oid in done:
                        waiting.pop(oid).set_result(None)
                await asyncio.sleep(tick[0])

        async def order(_: int) -> None:
            oid = f"bench-{run_tag}-{next(counter)}"
            t0 = time.perf_counter()
            confirmed = waiting[oid] = asyncio.get_running_loop().create_future()
            await orders.start_order(oid, "bench", "bench@example.com", [(sku, 1)])
            ack = await orders.payment_received(
                oid, PaymentReceived(payment_id=f"pay-{oid}", amount=10_000, currency="INR")
            )
            assert ack.accepted, ack.reason
            await confirmed
            latencies.append(time.perf_counter() - t0)

        watcher = asyncio.create_task(watch_confirmations())
        await bounded(20, 10, noop)  # warm up both paths
        await bounded(10, 10, order)
        latencies.clear()
        # no-op and order batches take turns, so a change in the machine's other load during
        # the run weighs on both rates alike (one batch of each with --rounds 1)
        noop_s = order_s = 0.0
        cpu_noop, cpu_order = [0.0, 0.0], [0.0, 0.0]
        slow_in_orders = 0
        batches = [
            len(b) for b in (range(args.orders)[r :: args.rounds] for r in range(args.rounds))
        ]
        for round_, batch in enumerate(batches):
            cpu0 = cpu_seconds(temporal.pid)
            noop_s += await bounded(batch, args.in_flight, noop)
            cpu1 = cpu_seconds(temporal.pid)
            slow_before = warnings.slow_tasks
            if round_ == 0:
                print("bench: orders phase", file=sys.stderr, flush=True)  # for bench/profile.py
            order_s += await bounded(batch, args.in_flight, order)
            cpu2 = cpu_seconds(temporal.pid)
            slow_in_orders += warnings.slow_tasks - slow_before
            for i in (0, 1):
                cpu_noop[i] += cpu1[i] - cpu0[i]
                cpu_order[i] += cpu2[i] - cpu1[i]
        with Session(engine) as session:
            confirmed = session.exec(
                select(func.count()).where(
                    col(Order.id).like(f"bench-{run_tag}-%"), col(Order.status) == "CONFIRMED"
                )
            ).one()
        assert confirmed == args.orders + 10, confirmed
        serial = []
        tick[0] = 0.005
        for i in range(10):  # latency at low concurrency: queueing excluded (Little's law)
            latencies.clear()
            await order(i)
            serial.append(latencies[0])

        noop_rate, order_rate = args.orders / noop_s, args.orders / order_s
        server = "in-memory" if args.memory else "file-backed (SQLite, WAL)"
        per = [spent / args.orders * 1000 for spent in (*cpu_noop, *cpu_order)]
        figures = {
            "bench": "orders",
            "server": "memory" if args.memory else "file",
            "traced": args.traced,
            "orders": args.orders,
            "in_flight": args.in_flight,
            "rounds": args.rounds,
            "noop_per_s": round(noop_rate, 1),
            "orders_per_s": round(order_rate, 1),
            "ratio": round(order_rate / noop_rate, 3),
            "cpu_ms_noop_server": round(per[0], 1),
            "cpu_ms_noop_worker": round(per[1], 1),
            "cpu_ms_order_server": round(per[2], 1),
            "cpu_ms_order_worker": round(per[3], 1),
            "slow_task_warnings": slow_in_orders,
            "slow_task_warnings_total": warnings.slow_tasks,
            "latency_p50_ms": round(statistics.median(serial) * 1000),
            "latency_max_ms": round(max(serial) * 1000),
            "load_avg_1m": os.getloadavg()[0],
        }
        if args.json:
            print(json.dumps(figures))
        else:
            print(
                f"server: {server}; {args.orders} each, {args.in_flight} in flight, "
                f"{args.rounds} alternating rounds"
            )
            print(f"no-op workflows/s:       {noop_rate:8.1f}")
            print(f"orders/s (start→pay→CONFIRMED): {order_rate:8.1f}")
            print(f"ratio orders/no-op:      {order_rate / noop_rate:8.2f}  (target ≥ 0.45)")
            print(
                f"CPU ms per workflow: no-op server {per[0]:.1f} + worker {per[1]:.1f}; "
                f"order server {per[2]:.1f} + worker {per[3]:.1f}"
            )
            print(
                f"order latency, one at a time: p50 {figures['latency_p50_ms']} ms, "
                f"max {figures['latency_max_ms']} ms"
            )
            print(
                f"slow workflow tasks (core {SLOW_TASK_WARNING}): "
                f"{figures['slow_task_warnings']} in the orders batches"
            )
        watcher.cancel()
        for w in workers:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        await email_queue.close()
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        embedded.stop(temporal)
        embedded.stop(redis)


if __name__ == "__main__":
    asyncio.run(main())
