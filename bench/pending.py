"""Memory of the orders worker with many orders waiting for payment (1-hour auto-cancel timers).

Starts the embedded default (file-backed Temporal dev server, SQLite, redis-server) in a temporary
folder, runs the orders worker in a process of its own (as `orderflow run --part workflows`
builds it) and starts orders that are never paid; prints the worker's RSS each time the number
of orders waiting in PENDING_PAYMENT reaches a checkpoint, and the ratio to the first one.
Usage: python bench/pending.py [--checkpoints 1000,5000,10000] [--max-cached N] [--json]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlmodel import Session, col, func, select

from app import embedded
from app.client import OrderClient
from app.temporal import connect
from orderflow import codec
from orderflow.contracts.mail import EMAIL_QUEUE
from orderflow.contracts.order import ORDERS_TASK_QUEUE, OrderStatus
from orderflow.db import Order, Product, make_engine, reader
from orderflow.schema import upgrade
from orderflow.settings import Settings
from workers.queues import producer_for
from workers.temporal import Dependencies, build_workers

SKU = "PENDING-SKU"


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def serve(settings: Settings) -> None:
    """The orders worker alone (this is the child process)."""
    engine = make_engine(settings.db_url)
    client = await connect(settings)
    email_queue = producer_for(settings, EMAIL_QUEUE)
    (worker,) = build_workers(
        client,
        settings,
        Dependencies.from_settings(settings, engine, email_queue),
        queues={ORDERS_TASK_QUEUE},
    )
    print("worker: ready", flush=True)
    await worker.run()


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    """The orders worker in a process of its own; returns once it polls."""
    worker = subprocess.Popen(
        [sys.executable, __file__, "--serve"], env=env, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None
    worker.stdout.readline()  # "worker: ready"
    return worker


async def drive(args: argparse.Namespace) -> dict[str, object]:
    """Start the servers and the worker process, fill up to each checkpoint, measure."""
    tmp = Path(tempfile.mkdtemp(prefix="orderflow-pending-"))
    port = embedded.free_port()
    temporal = embedded.start_temporal(
        port=port, ui_port=None, db_file=tmp / "temporal.db", log=tmp / "temporal.log"
    )
    redis_url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    redis = embedded.start_redis(url=redis_url, data_dir=tmp / "redis", log=tmp / "redis.log")
    env = {
        **os.environ,
        "ORDERFLOW_DATA_DIR": str(tmp),
        "ORDERFLOW_REDIS_URL": redis_url,
        "ORDERFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "ORDERFLOW_MAX_CACHED_WORKFLOWS": str(args.max_cached),
    }
    worker = None
    try:
        settings = Settings(data_dir=tmp, redis_url=redis_url, temporal_address=f"127.0.0.1:{port}")
        engine = make_engine(settings.db_url)
        upgrade(engine)
        checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
        with Session(engine) as session:
            session.add(Product(sku=SKU, name="pending", price=1_000, on_hand=checkpoints[-1] * 2))
            session.commit()
        worker = start_worker(env)
        client = await connect(settings)
        orders = OrderClient(client, settings, engine)
        reads = reader(engine)
        tag = uuid.uuid4().hex[:6]
        sem = asyncio.Semaphore(args.in_flight)

        async def start(i: int) -> None:
            async with sem:
                await orders.start_order(f"p-{tag}-{i}", "bench", "bench@example.com", [(SKU, 1)])

        def pending() -> int:
            with Session(reads) as session:
                return session.exec(
                    select(func.count()).where(col(Order.status) == OrderStatus.PENDING_PAYMENT)
                ).one()

        rows = []
        started = 0
        t0 = time.perf_counter()
        for target in checkpoints:
            await asyncio.gather(*(start(i) for i in range(started, target)))
            started = target
            while True:  # until every order reserved its stock and waits on its timer
                if pending() >= target:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(args.settle)
            rows.append(
                {
                    "pending": target,
                    "worker_rss_mib": round(rss_mib(worker.pid), 1),
                    "server_rss_mib": round(rss_mib(temporal.pid), 1),
                    "elapsed_s": round(time.perf_counter() - t0, 1),
                }
            )
            if not args.json:
                print(
                    f"{target:6} pending: orders worker RSS {rows[-1]['worker_rss_mib']:7.1f} MiB, "
                    f"server RSS {rows[-1]['server_rss_mib']:7.1f} MiB ({rows[-1]['elapsed_s']} s)",
                    flush=True,
                )
        first = float(rows[0]["worker_rss_mib"])  # type: ignore[arg-type]
        return {
            "bench": "pending",
            "max_cached_workflows": args.max_cached,
            "checkpoints": rows,
            "worker_rss_ratio_last_to_first": round(
                float(rows[-1]["worker_rss_mib"]) / first,  # type: ignore[arg-type]
                2,
            ),
            "load_avg_1m": os.getloadavg()[0],
        }
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        embedded.stop(temporal)
        embedded.stop(redis)
        shutil.rmtree(tmp, ignore_errors=True)  # the server's database: ~200 MB at 10k orders


def main() -> None:
    """Parse the arguments; run the worker (--serve) or the whole measurement."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoints", default="1000,5000,10000")
    parser.add_argument("--max-cached", type=int, default=Settings().max_cached_workflows)
    parser.add_argument("--in-flight", type=int, default=50, help="concurrent starts")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--json", action="store_true", help="print one JSON line of results")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(Settings()))
        return
    figures = asyncio.run(drive(args))
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"RSS at the last checkpoint ÷ the first: {figures['worker_rss_ratio_last_to_first']}"
        )


if __name__ == "__main__":
    # customer data encrypted, as a shop runs it; child processes inherit the same key
    os.environ.setdefault("ORDERFLOW_CODEC_KEY", codec.new_key("bench").spec())
    main()
