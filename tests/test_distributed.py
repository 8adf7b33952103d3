"""The distributed engine as separate `orderflow run --part ...` processes on real servers.

The processes get a Temporal dev server, a redis-server and a PostgreSQL database of their own,
so their workers never take the in-process test workers' tasks or jobs.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from temporalio.client import Client

from app import embedded
from app.client import OrderClient
from app.smtp_sink import SmtpSink
from bridge.admin import QueueAdmin
from bridge.producer import QueueProducer
from orderflow.contracts.inventory import ReservationStatus
from orderflow.contracts.mail import MailDeliveryStatus
from orderflow.contracts.order import OrderStatus
from orderflow.db import MailDelivery, Order, Product, Reservation, make_engine
from orderflow.schema import upgrade
from orderflow.settings import Settings
from payments.providers import sample_event, signed_headers
from tests.helpers import eventually
from tests.postgres import PostgresCluster
from tests.test_bridge_email import ORDER_MAIL
from workers.queues import email_spec

ORDERFLOW = str(Path(sys.executable).parent / "orderflow")
STOP_WITHIN = 60.0  # seconds a process gets to exit after SIGTERM (its grace is 5 s here)


@dataclass
class Stack:
    """The servers the processes share, and the environment that points them there."""

    folder: Path
    env: dict[str, str]
    settings: Settings
    sink: SmtpSink
    database_url: str
    procs: list[Process] = field(default_factory=list)


@dataclass
class Process:
    """One `orderflow` process, its log and (when it has one) its probe or HTTP port."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path
    port: int

    def tail(self) -> str:
        """The end of its log, for a failure message."""
        return f"--- {self.name} ---\n" + self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def stack(postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Temporal dev server, redis-server, a migrated PostgreSQL database and an SMTP sink."""
    folder = tmp_path_factory.mktemp("distributed")
    temporal_port = embedded.free_port()
    temporal = embedded.start_temporal(
        port=temporal_port, ui_port=None, db_file=None, log=folder / "temporal.log"
    )
    redis_url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    redis = embedded.start_redis(url=redis_url, data_dir=folder / "redis", log=folder / "redis.log")
    sink = SmtpSink(folder / "mail", "127.0.0.1", embedded.free_port()).start()
    database_url = postgres.create_database("distributed")
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORDERFLOW_", "OTEL_"))},
        "ORDERFLOW_DATA_DIR": str(folder / "data"),
        "ORDERFLOW_DATABASE_URL": database_url,
        "ORDERFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "ORDERFLOW_REDIS_URL": redis_url,
        "ORDERFLOW_SMTP_HOST": sink.host,
        "ORDERFLOW_SMTP_PORT": str(sink.port),
        "ORDERFLOW_EMBEDDED_TEMPORAL": "false",
        "ORDERFLOW_EMBEDDED_REDIS": "false",
        "ORDERFLOW_EMBEDDED_SMTP": "false",
        "ORDERFLOW_SEED_CATALOGUE": "false",
        "ORDERFLOW_MIGRATE_ON_START": "false",
        "ORDERFLOW_GRACEFUL_SHUTDOWN_SECONDS": "5",
        "ORDERFLOW_BRIDGE_GRACE_SECONDS": "5",
        "ORDERFLOW_ALLOW_INSECURE_SECRETS": "true",  # a throwaway topology on loopback
        "ORDERFLOW_ALLOW_SIMULATED_GATEWAY": "true",  # ... that moves no money
    }
    settings = Settings(
        redis_url=redis_url,
        database_url=database_url,
        temporal_address=env["ORDERFLOW_TEMPORAL_ADDRESS"],
    )
    yield Stack(folder, env, settings, sink, database_url)
    sink.stop()
    embedded.stop(redis)
    embedded.stop(temporal)


async def spawn(stack: Stack, name: str, part: str, **env: str) -> Process:
    """Start `orderflow run --part PART` with its probe (or, for http, its app) on a free port."""
    port = embedded.free_port()
    port_var = "ORDERFLOW_HTTP_PORT" if part == "http" else "ORDERFLOW_METRICS_PORT"
    log = stack.folder / f"{name}.log"
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            ORDERFLOW, "run", "--part", part,
            env={**stack.env, port_var: str(port), "ORDERFLOW_SERVICE_NAME": name, **env},
            stdout=out, stderr=out,
        )  # fmt: skip
    process = Process(name, proc, log, port)
    stack.procs.append(process)
    return process


async def healthy(http: httpx.AsyncClient, *procs: Process) -> None:
    """Wait until every process answers GET /healthz (fails at once if one has exited)."""

    async def answer() -> bool:
        for p in procs:
            assert p.proc.returncode is None, f"{p.name} exited:\n{p.tail()}"
            try:
                if (await http.get(f"http://127.0.0.1:{p.port}/healthz")).status_code != 200:
                    return False
            except httpx.TransportError:
                return False
        return True

    await eventually(answer, within=120, what="processes healthy")


async def stop(*procs: Process) -> list[int]:
    """SIGTERM the processes and return their exit codes."""
    for p in procs:
        if p.proc.returncode is None:
            p.proc.send_signal(signal.SIGTERM)
    return [await asyncio.wait_for(p.proc.wait(), STOP_WITHIN) for p in procs]


def metric_names(text: str) -> set[str]:
    """Every sample name in a Prometheus text page."""
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def completed_jobs(text: str, queue: str) -> float:
    """bullmq_jobs_completed_total for one queue."""
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "bullmq_jobs_completed_total" and s.labels.get("bullmq_queue_name") == queue
    )


class OtlpSink:
    """Stands in for the OTel collector's OTLP/HTTP receiver: records who pushed metrics."""

    def __init__(self) -> None:
        self.pushed: set[str] = set()  # service.name of every metrics export received
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/metrics":
                    request = ExportMetricsServiceRequest.FromString(body)
                    for rm in request.resource_metrics:
                        for attr in rm.resource.attributes:
                            if attr.key == "service.name":
                                sink.pushed.add(attr.value.string_value)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop listening."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def otlp() -> Iterator[OtlpSink]:
    """An OTLP/HTTP endpoint the processes push to, as they push to the collector in compose."""
    sink = OtlpSink()
    yield sink
    sink.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for the processes' ports."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_every_process_kind_serves_its_own_metrics_and_pushes_them_over_otlp_http(
    stack: Stack, http: httpx.AsyncClient, otlp: OtlpSink
) -> None:
    push = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
    workflows = await spawn(stack, "probe-workflows", "workflows", **push)
    bridge = await spawn(stack, "probe-bridge", "bridge", **push)
    web = await spawn(stack, "probe-http", "http", **push)
    try:
        await healthy(http, workflows, bridge, web)
        spec = email_spec(stack.settings)
        producer = QueueProducer.connect(spec, stack.settings.redis_url)
        await producer.add("send-order-confirmation", {**ORDER_MAIL, "to": "probe@example.com"})
        await producer.close()
        await stack.sink.store.wait_for(1, within=30, to="probe@example.com")

        async def scrape(p: Process) -> str:
            response = await http.get(f"http://127.0.0.1:{p.port}/metrics")
            assert response.status_code == 200
            return response.text

        async def bridge_counted() -> bool:
            return completed_jobs(await scrape(bridge), spec.name) >= 1

        async def workflows_report_temporal() -> bool:
            return any(n.startswith("temporal_") for n in metric_names(await scrape(workflows)))

        await eventually(bridge_counted, within=30, what="bridge's /metrics counts the mail")
        await eventually(workflows_report_temporal, within=30, what="Temporal SDK metrics")
        assert "bullmq_queue_jobs" in metric_names(await scrape(web))  # queue depths at scrape

        async def all_pushed() -> bool:
            return otlp.pushed >= {workflows.name, bridge.name, web.name}

        await eventually(all_pushed, within=30, what="every process pushed metrics over OTLP")
    finally:
        codes = await stop(workflows, bridge, web)
    assert codes == [0, 0, 0], "\n".join(p.tail() for p in (workflows, bridge, web))


# ---- many processes, SIGKILL mid-run ---------------------------------------------------------

ORDERS = 200
STOCK = 1000  # units of the one SKU; every order takes 1 to 3
KILL_AFTER = ORDERS // 2  # webhooks posted before one process of each kind is killed


async def post_until_accepted(
    http: httpx.AsyncClient, web: Process, body: bytes, settings: Settings
) -> None:
    """POST a signed webhook the way a gateway redelivers: until it answers 200."""
    headers = signed_headers("stripe", body, settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while True:
        try:
            response = await http.post(
                f"http://127.0.0.1:{web.port}/webhooks/stripe", content=body, headers=headers
            )
            if response.status_code == 200:
                return
            assert response.status_code >= 500, response.text
        except httpx.TransportError:
            pass
        assert loop.time() < deadline, "the HTTP part took no webhook for 120 s"
        await asyncio.sleep(0.2)  # the retry interval of a poll, not a wait for anything


async def respawn(stack: Stack, dead: Process, part: str) -> Process:
    """SIGKILL a process, wait for it to die, start the same kind again on the same port."""
    dead.proc.send_signal(signal.SIGKILL)
    await dead.proc.wait()
    port_var = "ORDERFLOW_HTTP_PORT" if part == "http" else "ORDERFLOW_METRICS_PORT"
    again = await spawn(stack, f"{dead.name}-again", part, **{port_var: str(dead.port)})
    again.port = dead.port
    return again


@pytest.mark.timeout(900)  # its waits add up to more than the default 300 s under load
async def test_two_hundred_webhook_paid_orders_survive_a_sigkill_of_each_process_kind(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    engine = make_engine(stack.database_url)
    sku = f"MP-{uuid.uuid4().hex[:6]}"
    with Session(engine) as session:
        session.add(Product(sku=sku, name="multi-process", price=49_900, on_hand=STOCK))
        session.commit()
    procs = {
        "wf1": await spawn(stack, "wf1", "workflows"),
        "wf2": await spawn(stack, "wf2", "workflows"),
        "br1": await spawn(stack, "br1", "bridge"),
        "br2": await spawn(stack, "br2", "bridge"),
        "web": await spawn(stack, "web", "http"),
    }
    client = await Client.connect(stack.settings.temporal_address)
    orders = OrderClient(client, stack.settings, engine)
    tag = uuid.uuid4().hex[:6]
    ids = [f"mp-{tag}-{i:03d}" for i in range(ORDERS)]
    quantity = {order_id: 1 + i % 3 for i, order_id in enumerate(ids)}
    started = asyncio.get_running_loop().time()
    try:
        await healthy(http, *procs.values())
        for chunk in range(0, ORDERS, 25):
            await asyncio.gather(
                *(
                    orders.start_order(o, "mp", f"{o}@example.com", [(sku, quantity[o])])
                    for o in ids[chunk : chunk + 25]
                )
            )

        def pending() -> set[str]:
            with Session(engine) as session:
                rows = session.exec(
                    select(Order.id).where(
                        col(Order.id).in_(ids), Order.status == OrderStatus.PENDING_PAYMENT
                    )
                ).all()
            return set(rows)

        async def all_pending() -> bool:
            return len(pending()) == ORDERS

        await eventually(all_pending, within=120, what="200 orders waiting for payment")
        with Session(engine) as session:
            totals = {
                o.id: o.total for o in session.exec(select(Order).where(col(Order.id).in_(ids)))
            }
        bodies = [sample_event("stripe", o, totals[o]) for o in ids]
        for i, body in enumerate(bodies):
            if i == KILL_AFTER:  # one of each kind dies without a chance to clean up
                procs["wf1"] = await respawn(stack, procs["wf1"], "workflows")
                procs["br1"] = await respawn(stack, procs["br1"], "bridge")
                procs["web"] = await respawn(stack, procs["web"], "http")
            copies = 1 + (i % 4 == 0) + (i % 10 == 0)  # every 4th twice, every 10th thrice
            await asyncio.gather(
                *(
                    post_until_accepted(http, procs["web"], body, stack.settings)
                    for _ in range(copies)
                )
            )
        posted = asyncio.get_running_loop().time()

        def statuses() -> dict[str, int]:
            with Session(engine) as session:
                rows = session.exec(
                    select(Order.status, func.count())
                    .where(col(Order.id).in_(ids))
                    .group_by(Order.status)
                ).all()
            return {status: int(n) for status, n in rows}

        async def all_confirmed() -> bool:
            for p in procs.values():
                assert p.proc.returncode is None, f"{p.name} exited:\n{p.tail()}"
            return statuses() == {OrderStatus.CONFIRMED: ORDERS}

        await eventually(all_confirmed, within=240, what="every order confirmed")
        confirmed = asyncio.get_running_loop().time()
        mine = {f"{o}@example.com" for o in ids}

        def deliveries() -> list[str]:
            return [to for m in stack.sink.store.deliveries() for to in m.to if to in mine]

        def unknown() -> set[str]:
            """Mails the SIGKILLed bridge handed to the relay (DATA) with no answer: UNKNOWN,
            never resent automatically, dead-lettered for an operator (mail/processor.py)."""
            with Session(engine) as session:
                rows = session.exec(
                    select(MailDelivery.recipient).where(
                        col(MailDelivery.recipient).in_(mine),
                        MailDelivery.status == MailDeliveryStatus.UNKNOWN,
                    )
                ).all()
            return set(rows)

        async def every_order_mailed() -> bool:
            return set(deliveries()) | unknown() == mine

        await eventually(
            every_order_mailed, within=120, what="a confirmation mail per order (or UNKNOWN)"
        )
        admin = QueueAdmin(email_spec(stack.settings), stack.settings.redis_url)

        seen: list[object] = []

        async def email_queue_drained() -> bool:
            counts = await admin.counts()
            # every UNKNOWN mail's job fails for good, saying so (the relay may hold it: only its
            # log can tell): the DLQ holds exactly those, nothing else
            failed = len(unknown())
            busy = counts.waiting + counts.active + counts.delayed
            seen[:] = [counts, sorted(unknown())]
            return busy == 0 and counts.failed == counts.dlq == failed

        await eventually(
            email_queue_drained, within=120, what=lambda: f"email-queue drained: {seen}"
        )
        await admin.close()
        unknown_mails = unknown()
    finally:
        codes = await stop(*procs.values())
        await engine_dispose(engine)
    sent = deliveries()
    # One mail per order, by Message-ID (fixed by the job): a bridge process SIGKILLed between
    # the relay's 250 to DATA and recording SENT leaves the relay holding a mail the database
    # does not know of, and the job sends it again after the claim goes stale -- the same
    # message, which mail clients show once. No SMTP relay lets a sender ask what it accepted,
    # so that window (milliseconds) is the one place delivery is at-least-once (README).
    per_order: dict[str, set[str]] = {}
    for mail in stack.sink.store.deliveries():
        for to in mail.to:
            if to in mine:
                per_order.setdefault(to, set()).add(mail.message_id)
    assert set(per_order) | unknown_mails == mine
    assert all(len(ids) == 1 for ids in per_order.values()), {
        to: ids for to, ids in per_order.items() if len(ids) != 1
    }
    # only mails in the SMTP conversation of the one bridge process killed can be UNKNOWN
    assert len(unknown_mails) <= stack.settings.email.concurrency, unknown_mails
    resent = len(sent) - len(per_order)
    with Session(engine) as session:
        product = session.get(Product, sku)
        held = session.exec(
            select(func.sum(Reservation.quantity)).where(
                Reservation.sku == sku, Reservation.status == ReservationStatus.RESERVED
            )
        ).one()
    assert product is not None
    assert (product.on_hand + product.reserved, product.reserved, held) == (
        STOCK,
        sum(quantity.values()),
        sum(quantity.values()),
    )
    assert codes == [0] * 5, "\n".join(p.tail() for p in procs.values())
    print(f"same-Message-ID resends after the SIGKILL: {resent}")
    print(f"mails left UNKNOWN (handed over, no answer) and dead-lettered: {len(unknown_mails)}")
    print(
        f"\n{ORDERS} orders, {sum(1 + (i % 4 == 0) + (i % 10 == 0) for i in range(ORDERS))} "
        f"webhooks posted in {posted - started:.1f} s; all confirmed "
        f"{confirmed - posted:.1f} s later; wf1, br1, web SIGKILLed after {KILL_AFTER}"
    )


async def engine_dispose(engine: Engine) -> None:
    """Close the test's pool (the assertions after it open a fresh connection)."""
    engine.dispose()
