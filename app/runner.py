"""`orderflow run`: the whole system on one machine, in the foreground, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import threading
from collections.abc import Collection
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import uvicorn
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from app import catalogue, embedded
from app.client import OrderClient
from app.deployments import log_routing
from app.schedules import ensure_maintenance_schedules, ensure_schedules
from app.smtp_sink import start_smtp_sink, stop_smtp_sink
from app.telemetry import Telemetry, setup_telemetry
from app.temporal import connect
from app.web.app import create_app, http_server
from app.web.codec import codec_endpoint
from app.web.metrics import metrics_router
from app.web.probe import probe_app, probe_server
from orderflow import schema
from orderflow.contracts.mail import EMAIL_QUEUE
from orderflow.contracts.payment import WEBHOOK_QUEUE
from orderflow.db import make_engine
from orderflow.errors import OrderflowError
from orderflow.redis_url import is_cluster_url, is_sentinel_url
from orderflow.settings import Settings
from workers.bridge import run_bridge_workers
from workers.queues import producer_for, queue_specs
from workers.temporal import Dependencies, build_workers

log = logging.getLogger("orderflow")


def start_servers(settings: Settings, stack: AsyncExitStack) -> None:
    """Start the embedded Temporal dev server and Redis (each unless configured as external)."""
    logs = settings.data_dir / "logs"
    procs: list[subprocess.Popen] = []
    if settings.embedded_temporal:
        port = int(settings.temporal_address.rsplit(":", 1)[1])
        procs.append(
            embedded.start_temporal(
                port=port,
                ui_port=settings.temporal_ui_port,
                db_file=settings.data_dir / "temporal.db",
                log=logs / "temporal.log",
                codec_endpoint=codec_endpoint(settings),
            )
        )
        log.info(
            "Temporal dev server on %s, Web UI http://localhost:%d (decoding at %s)",
            settings.temporal_address,
            settings.temporal_ui_port,
            codec_endpoint(settings),
        )
    if settings.embedded_redis:
        if is_sentinel_url(settings.redis_url) or is_cluster_url(settings.redis_url):
            raise OrderflowError(
                "ORDERFLOW_REDIS_URL is a Sentinel URL or ORDERFLOW_REDIS_CLUSTER is on, which the embedded redis-server cannot"
                " serve: set ORDERFLOW_EMBEDDED_REDIS=false"
            )
        procs.append(
            embedded.start_redis(
                url=settings.redis_url, data_dir=settings.data_dir / "redis", log=logs / "redis.log"
            )
        )
        log.info("redis-server on port %s (AOF on, noeviction)", urlparse(settings.redis_url).port)
    for proc in reversed(procs):
        stack.callback(embedded.stop, proc)


def prepare_schema(
    settings: Settings, engine: Engine, abandoned: threading.Event | None = None
) -> None:
    """Migrate (embedded default) or wait for the migration job (distributed engine)."""
    if settings.migrate_on_start:
        log.info("database schema at %s", ", ".join(sorted(schema.upgrade(engine))))
    else:
        schema.wait_for_schema(engine, settings.schema_wait_seconds, abandoned)


async def _prepare_schema_in_thread(settings: Settings, engine: Engine) -> None:
    """`prepare_schema` off the event loop, its thread ended before a cancellation goes on.

    A thread cannot be cancelled: a cancelled start would otherwise dispose of the engine while
    the thread still migrates or polls on it. A migration runs to its end; a wait stops polling.
    """
    abandoned = threading.Event()
    work = asyncio.ensure_future(asyncio.to_thread(prepare_schema, settings, engine, abandoned))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        abandoned.set()
        await asyncio.gather(work, return_exceptions=True)
        raise


PARTS = ("workflows", "bridge", "http")  # Temporal workers + schedules, bridge workers, HTTP app


@dataclass
class Running:
    """What a start brought up, for the shutdown to take down in reverse order."""

    workers: list[Worker] = field(default_factory=list)
    """The Temporal workers (the workflows part)."""
    servers: list[uvicorn.Server] = field(default_factory=list)
    """The HTTP app's server (served by the http part only)."""
    probe: uvicorn.Server | None = None
    """This process's /metrics and /healthz on metrics_port, if set."""
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    """Every running part: a failed one stops the process."""


def check_start(settings: Settings, parts: Collection[str]) -> None:
    """Refuse an unknown part, a public secret or an unusable gateway; warn of what is allowed."""
    if unknown := set(parts) - set(PARTS):
        raise OrderflowError(f"unknown part(s) {sorted(unknown)}: choose from {', '.join(PARTS)}")
    settings.check_production_secrets()
    settings.check_gateway()
    if settings.production_shaped and settings.allow_insecure_secrets:
        for problem in settings.insecure_secrets():
            log.warning("ORDERFLOW_ALLOW_INSECURE_SECRETS: starting although %s", problem)
    if settings.production_shaped and settings.gateway == "simulated":
        log.warning("ORDERFLOW_ALLOW_SIMULATED_GATEWAY: payments are simulated, no money moves")
    if settings.production_shaped and (keys := settings.test_mode_keys()):
        log.warning(
            "%s is a test-mode key: %s runs in test mode, no real money moves (fine for staging;"
            " production needs the live key)",
            " and ".join(keys),
            settings.gateway.value,
        )


async def start_backends(
    settings: Settings, parts: Collection[str], stack: AsyncExitStack
) -> tuple[Engine, Telemetry, Client]:
    """The embedded servers, the schema, telemetry, Temporal and (workflows part) the schedules."""
    start_servers(settings, stack)
    if settings.embedded_smtp:
        sink = start_smtp_sink(settings)
        stack.callback(stop_smtp_sink, sink)
        log.info(
            "SMTP sink on %s:%d, mail kept in %s",
            settings.smtp_host,
            settings.smtp_port,
            sink.folder,
        )
    engine = make_engine(settings.db_url)
    stack.callback(engine.dispose)
    await _prepare_schema_in_thread(settings, engine)
    if settings.seed_catalogue and (added := catalogue.seed(engine)):
        log.info("seeded %d starter products", added)
    telemetry = setup_telemetry(settings)
    stack.callback(telemetry.shutdown)
    client = await connect(settings, runtime=telemetry.temporal_runtime)
    await stack.enter_async_context(telemetry.temporal_metrics())
    if "workflows" in parts:
        log.info("schedules: %s", ", ".join(await ensure_schedules(client, settings)))
        log.info("maintenance: %s", ", ".join(await ensure_maintenance_schedules(client, settings)))
    return engine, telemetry, client


async def start_parts(
    settings: Settings,
    parts: Collection[str],
    stack: AsyncExitStack,
    stop: asyncio.Event,
    backends: tuple[Engine, Telemetry, Client],
) -> Running:
    """Start the Temporal workers, the bridge worker of every registered queue and the HTTP app."""
    engine, telemetry, client = backends
    email_queue = producer_for(settings, EMAIL_QUEUE)
    webhook_queue = producer_for(settings, WEBHOOK_QUEUE)
    stack.push_async_callback(email_queue.close)
    stack.push_async_callback(webhook_queue.close)
    running = Running()
    if "workflows" in parts:
        deps = Dependencies.from_settings(settings, engine, email_queue)
        running.workers = build_workers(client, settings, deps)
        if settings.worker_versioning:  # a build no one promoted takes no new orders: say so
            await log_routing(client, settings)
    running.tasks = [
        asyncio.create_task(w.run(), name=f"worker-{w.task_queue}") for w in running.workers
    ]
    order_client = OrderClient(client, settings, engine)
    if "bridge" in parts:
        bridge = run_bridge_workers(settings, stop, orders=order_client, engine=engine)
        running.tasks.append(asyncio.create_task(bridge, name="bridge"))
    app = create_app(
        settings, webhook_queue, orders=order_client, engine=engine, telemetry=telemetry
    )
    running.servers = [http_server(settings, app)]
    if "http" in parts:
        running.tasks.append(asyncio.create_task(running.servers[0].serve(), name="http"))
        log.info(
            "HTTP app on http://%s:%d (webhooks, health, /metrics, /ops dashboard)",
            settings.http_host,
            settings.http_port,
        )
    if settings.metrics_port:
        # the http part adds the queue and order gauges to the process's own metrics
        http_part = "http" in parts
        specs = queue_specs(settings) if http_part else {}
        router = metrics_router(telemetry, specs, settings, engine if http_part else None)
        running.probe = probe_server(settings, probe_app(parts, router))
        running.tasks.append(asyncio.create_task(running.probe.serve(), name="probe"))
        log.info(
            "metrics and health on http://%s:%d/metrics, /healthz",
            settings.metrics_host,
            settings.metrics_port,
        )
    return running


async def shut_down(settings: Settings, stop: asyncio.Event, running: Running) -> None:
    """Wait for a stop signal or a failed part, then stop every part, the probe last."""
    done, _ = await asyncio.wait(
        [asyncio.create_task(stop.wait()), *running.tasks], return_when=asyncio.FIRST_COMPLETED
    )
    for task in done:
        if task in running.tasks and task.exception() is not None:
            log.error("%s failed: %s", task.get_name(), task.exception())
    log.info(
        "stopping: no new tasks, in-flight work gets %.0fs", settings.graceful_shutdown_seconds
    )
    stop.set()
    for server in running.servers:
        server.should_exit = True
    await asyncio.gather(*(w.shutdown() for w in running.workers), return_exceptions=True)
    if running.probe is not None:  # healthy until the workers have handed their work back
        running.probe.should_exit = True
    await asyncio.gather(*running.tasks, return_exceptions=True)


async def run(settings: Settings, parts: Collection[str] = PARTS) -> None:
    """Bring the parts up, wait for a stop signal, shut down gracefully in reverse order.

    On the distributed engine each host runs the parts it should (e.g. only "bridge"),
    with the embedded servers switched off in the settings.

    Args:
        settings: The process's settings.
        parts: Which of PARTS this process runs.

    Raises:
        OrderflowError: An unknown part, a public secret in a production-shaped start
            (InsecureSettingsError) or a gateway that cannot run (GatewaySettingsError).
    """
    check_start(settings, parts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        backends = await start_backends(settings, parts, stack)
        running = await start_parts(settings, parts, stack, stop, backends)
        log.info("orderflow is up (%s); Ctrl-C to stop", ", ".join(parts))
        await shut_down(settings, stop, running)
    log.info("stopped")
