"""End-to-end orders/s (start → pay → CONFIRMED) against no-op workflows/s on the same server.

Starts its own file-backed Temporal dev server (as `orderflow run` does), a redis-server and a
SQLite database in a temporary folder, runs the real workers in this process, and prints both
rates and their ratio, CPU per workflow (server process and this one) and the count of
"workflow task duration exceeded" warnings the SDK core logged.

With `--codec` the same run also drives a second side whose client and workers encrypt every
payload (orderflow/codec.py, a fresh key): its own no-op and order batches on task queues of
its own, taking turns with the plain side's, so both ratios come from one run.
Usage: python bench/orders.py [--orders N] [--in-flight C] [--rounds R] [--memory] [--traced]
[--codec] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import temporalio.converter
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from temporalio.api.common.v1 import Payload
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
from orderflow import codec
from orderflow.contracts.mail import EMAIL_QUEUE
from orderflow.contracts.order import ORDERS_TASK_QUEUE, PaymentReceived
from orderflow.db import Order, Product, make_engine, reader
from orderflow.schema import upgrade
from orderflow.settings import Settings
from workers.queues import producer_for
from workers.temporal import Dependencies, build_workers, workflow_runner

NOOP_QUEUE = "bench-noop"
SLOW_TASK_WARNING = "TMPRL1104"  # core's "Workflow task duration exceeded N seconds"
SKU = "BENCH-SKU"


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


class Confirmations:
    """One poller for all in-flight orders of every side, so waiting costs one query per tick."""

    def __init__(self, engine: Engine) -> None:
        self.reads = reader(engine)
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.tick = 0.05  # coarse under load, fine for the latency runs

    def expect(self, order_id: str) -> asyncio.Future[None]:
        """A future set once the order is CONFIRMED in the database."""
        future = self.waiting[order_id] = asyncio.get_running_loop().create_future()
        return future

    async def watch(self) -> None:
        """Resolve the futures of confirmed orders, forever."""
        while True:
            if self.waiting:
                with Session(self.reads) as session:
                    done = session.exec(
                        select(Order.id).where(
                            col(Order.id).in_(list(self.waiting)), col(Order.status) == "CONFIRMED"
                        )
                    ).all()
                for oid in done:
                    self.waiting.pop(oid).set_result(None)
            await asyncio.sleep(self.tick)


class CountedMail:
    """The email queue, counting the jobs added: an order's mail is the last step of its
    confirmed path, so a batch waits for the previous one's mails before it starts."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.added = 0
        self.changed = asyncio.Event()

    async def add(self, name: str, data: dict[str, Any], opts: dict[str, Any] | None = None) -> str:
        """Add one job and count it."""
        job_id: str = await self.queue.add(name, data, opts)
        self.added += 1
        self.changed.set()
        return job_id

    async def drained(self, confirmed: int, within: float = 60.0) -> None:
        """Wait until every confirmed order's mail is added (the last work it gives the server
        and this process), so it does not weigh on the next batch."""
        deadline = time.monotonic() + within
        while self.added < confirmed:
            self.changed.clear()
            if (left := deadline - time.monotonic()) <= 0:
                print(f"bench: {confirmed - self.added} mails late", file=sys.stderr)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


class TimedCodec(codec.EncryptionCodec):
    """The codec, counting the payloads it seals and opens and the CPU time it takes (this
    thread's: every encode and decode runs on the event loop)."""

    payloads = 0
    cpu_s = 0.0

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        t0 = time.thread_time()
        try:
            return await super().encode(payloads)
        finally:
            TimedCodec.cpu_s += time.thread_time() - t0
            TimedCodec.payloads += len(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        t0 = time.thread_time()
        try:
            return await super().decode(payloads)
        finally:
            TimedCodec.cpu_s += time.thread_time() - t0
            TimedCodec.payloads += len(payloads)


@dataclass
class Side:
    """One way of running the same work (plain, or with the codec): its client, its task
    queues, and what its batches took."""

    name: str
    client: Client
    suffix: str
    confirmations: Confirmations
    settings: Settings
    engine: Engine
    noop_s: float = 0.0
    order_s: float = 0.0
    cpu_noop: list[float] = field(default_factory=lambda: [0.0, 0.0])
    cpu_order: list[float] = field(default_factory=lambda: [0.0, 0.0])
    slow: int = 0
    codec_cpu_s: float = 0.0  # in TimedCodec during this side's order batches
    codec_payloads: int = 0
    serial: list[float] = field(default_factory=list)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    count: int = 0

    @property
    def orders(self) -> OrderClient:
        """The order client on this side's orders task queue."""
        queue = ORDERS_TASK_QUEUE + self.suffix
        return OrderClient(self.client, self.settings, self.engine, task_queue=queue)

    def workers(self, deps: Dependencies) -> list[Worker]:
        """The real workers and the no-op one, on this side's task queues."""
        noop = Worker(
            self.client,
            task_queue=NOOP_QUEUE + self.suffix,
            workflows=[NoopWorkflow],
            workflow_runner=workflow_runner(self.settings),  # as the orders worker's
        )
        suffix = self.suffix
        return [*build_workers(self.client, self.settings, deps, task_queue_suffix=suffix), noop]

    async def noop(self, _: int) -> None:
        """One no-op workflow, start to result."""
        await self.client.execute_workflow(
            NoopWorkflow.run, id=f"noop-{uuid.uuid4().hex}", task_queue=NOOP_QUEUE + self.suffix
        )

    async def order(self, _: int) -> float:
        """One order, start → pay → CONFIRMED; returns its latency."""
        oid = f"bench-{self.tag}-{self.count}"
        self.count += 1
        t0 = time.perf_counter()
        confirmed = self.confirmations.expect(oid)
        orders = self.orders
        await orders.start_order(oid, "bench", "bench@example.com", [(SKU, 1)])
        ack = await orders.payment_received(
            oid, PaymentReceived(payment_id=f"pay-{oid}", amount=10_000, currency="INR")
        )
        assert ack.accepted, ack.reason
        await confirmed
        return time.perf_counter() - t0

    def confirmed(self) -> int:
        """How many of this side's orders are CONFIRMED."""
        with Session(self.engine) as session:
            return session.exec(
                select(func.count()).where(
                    col(Order.id).like(f"bench-{self.tag}-%"), col(Order.status) == "CONFIRMED"
                )
            ).one()

    def figures(self, orders: int) -> dict[str, Any]:
        """Rates, ratio, CPU per workflow and latency of this side."""
        noop_rate, order_rate = orders / self.noop_s, orders / self.order_s
        per = [spent / orders * 1000 for spent in (*self.cpu_noop, *self.cpu_order)]
        return {
            "noop_per_s": round(noop_rate, 1),
            "orders_per_s": round(order_rate, 1),
            "ratio": round(order_rate / noop_rate, 3),
            "cpu_ms_noop_server": round(per[0], 1),
            "cpu_ms_noop_worker": round(per[1], 1),
            "cpu_ms_order_server": round(per[2], 1),
            "cpu_ms_order_worker": round(per[3], 1),
            "slow_task_warnings": self.slow,
            "codec_cpu_ms_per_order": round(self.codec_cpu_s / orders * 1000, 2),
            "codec_payloads_per_order": round(self.codec_payloads / orders, 1),
            "latency_p50_ms": round(statistics.median(self.serial) * 1000),
            "latency_max_ms": round(max(self.serial) * 1000),
        }


async def run_rounds(
    sides: list[Side],
    args: argparse.Namespace,
    server_pid: int,
    warnings: CoreWarnings,
    mail: CountedMail,
) -> None:
    """Warm up, then no-op and order batches taking turns, side after side (the sides' order
    swapped every round), so a change in the machine's load weighs on every rate alike; each
    batch starts once the orders before it have added their mails."""
    for side in sides:
        await bounded(20, 10, side.noop)
        await bounded(10, 10, side.order)
    confirmed = 10 * len(sides)
    batches = [len(b) for b in (range(args.orders)[r :: args.rounds] for r in range(args.rounds))]
    for round_, batch in enumerate(batches):
        for side in sides if round_ % 2 == 0 else reversed(sides):
            await mail.drained(confirmed)
            cpu0 = cpu_seconds(server_pid)
            side.noop_s += await bounded(batch, args.in_flight, side.noop)
            cpu1 = cpu_seconds(server_pid)
            slow_before = warnings.slow_tasks
            if round_ == 0 and side is sides[0]:
                print("bench: orders phase", file=sys.stderr, flush=True)  # bench/profile.py
            codec0 = (TimedCodec.cpu_s, TimedCodec.payloads)
            side.order_s += await bounded(batch, args.in_flight, side.order)
            confirmed += batch
            await mail.drained(confirmed)  # its orders' last steps counted with them
            cpu2 = cpu_seconds(server_pid)
            side.codec_cpu_s += TimedCodec.cpu_s - codec0[0]
            side.codec_payloads += TimedCodec.payloads - codec0[1]
            side.slow += warnings.slow_tasks - slow_before
            for i in (0, 1):
                side.cpu_noop[i] += cpu1[i] - cpu0[i]
                side.cpu_order[i] += cpu2[i] - cpu1[i]
    for side in sides:
        assert side.confirmed() == args.orders + 10, (side.name, side.confirmed())
    sides[0].confirmations.tick = 0.005
    for side in sides:  # latency at low concurrency: queueing excluded (Little's law)
        side.serial = [await side.order(i) for i in range(10)]


def report(sides: list[Side], args: argparse.Namespace, warnings: CoreWarnings) -> None:
    """Print the figures, as text or one JSON line."""
    plain = sides[0].figures(args.orders)
    figures: dict[str, Any] = {
        "bench": "orders",
        "server": "memory" if args.memory else "file",
        "traced": args.traced,
        "codec": args.codec,
        "orders": args.orders,
        "in_flight": args.in_flight,
        "rounds": args.rounds,
        **plain,
        "slow_task_warnings_total": warnings.slow_tasks,
        "load_avg_1m": os.getloadavg()[0],
    }
    for side in sides[1:]:
        figures |= {f"{k}_{side.name}": v for k, v in side.figures(args.orders).items()}
    if args.json:
        print(json.dumps(figures))
        return
    server = "in-memory" if args.memory else "file-backed (SQLite, WAL)"
    print(
        f"server: {server}; {args.orders} each, {args.in_flight} in flight, "
        f"{args.rounds} alternating rounds"
    )
    for side in sides:
        f = side.figures(args.orders)
        print(f"[{side.name}]")
        print(f"no-op workflows/s:       {f['noop_per_s']:8.1f}")
        print(f"orders/s (start→pay→CONFIRMED): {f['orders_per_s']:8.1f}")
        print(f"ratio orders/no-op:      {f['ratio']:8.2f}  (target ≥ 0.45)")
        print(
            f"CPU ms per workflow: no-op server {f['cpu_ms_noop_server']:.1f} + worker "
            f"{f['cpu_ms_noop_worker']:.1f}; order server {f['cpu_ms_order_server']:.1f} + "
            f"worker {f['cpu_ms_order_worker']:.1f}"
        )
        print(
            f"order latency, one at a time: p50 {f['latency_p50_ms']} ms, "
            f"max {f['latency_max_ms']} ms"
        )
        print(
            f"slow workflow tasks (core {SLOW_TASK_WARNING}): "
            f"{f['slow_task_warnings']} in the orders batches"
        )
        if f["codec_payloads_per_order"]:
            print(
                f"codec: {f['codec_payloads_per_order']} payloads per order sealed or opened,"
                f" {f['codec_cpu_ms_per_order']} ms CPU per order"
            )


def parse_args() -> argparse.Namespace:
    """The command line."""
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
        "--traced",
        action="store_true",
        help="the production client (app.temporal.connect: tracing interceptor and the codec)",
    )
    parser.add_argument(
        "--codec",
        action="store_true",
        help="also a side whose client and workers encrypt every payload, beside the plain one",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line of results")
    return parser.parse_args()


async def main() -> None:
    """Run the no-op baseline and the orders on one server; print rates and the ratio."""
    args = parse_args()
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
        with Session(engine) as session:
            stock = 10 * args.orders + 1000
            session.add(Product(sku=SKU, name="bench", price=10_000, on_hand=stock * 2))
            session.commit()
        runtime = core_runtime(warnings)
        if args.traced:
            client = await connect(settings, runtime=runtime)
        else:
            client = await Client.connect(settings.temporal_address, runtime=runtime)
        confirmations = Confirmations(engine)
        sides = [Side("plain", client, "", confirmations, settings, engine)]
        if args.codec:
            ring = codec.Keyring(codec.new_key("bench"))
            converter = temporalio.converter.DataConverter(
                payload_codec=TimedCodec(ring),
                failure_converter_class=codec.FailureConverter,
            )  # codec.data_converter's, with the codec timed
            sealed = await Client.connect(
                settings.temporal_address, runtime=runtime, data_converter=converter
            )
            sides.append(Side("codec", sealed, "-codec", confirmations, settings, engine))
        email_queue = producer_for(settings, EMAIL_QUEUE)
        mail = CountedMail(email_queue)
        deps = Dependencies.from_settings(settings, engine, mail)
        workers = [worker for side in sides for worker in side.workers(deps)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        watcher = asyncio.create_task(confirmations.watch())
        await run_rounds(sides, args, temporal.pid, warnings, mail)
        report(sides, args, warnings)
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
