"""The distributed engine as separate `orderflow run --part ...` processes on real servers.

The processes get a Temporal dev server, a redis-server and a PostgreSQL database of their own,
so their workers never take the in-process test workers' tasks or jobs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import embedded
from app.smtp_sink import SmtpSink
from bridge.producer import QueueProducer
from bridge.specs import email_spec
from orderflow.db import make_engine
from orderflow.schema import upgrade
from orderflow.settings import Settings
from tests.helpers import eventually
from tests.postgres import PostgresCluster
from tests.test_bridge_email import ORDER_MAIL

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


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for the processes' ports."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_every_process_kind_serves_its_own_metrics_and_health(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    workflows = await spawn(stack, "probe-workflows", "workflows")
    bridge = await spawn(stack, "probe-bridge", "bridge")
    web = await spawn(stack, "probe-http", "http")
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
    finally:
        codes = await stop(workflows, bridge, web)
    assert codes == [0, 0, 0], "\n".join(p.tail() for p in (workflows, bridge, web))
