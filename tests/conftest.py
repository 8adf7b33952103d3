"""Session fixtures: one real Temporal dev server (with time skipping) and one real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue as BullQueue
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.erp import HttpErp
from app import embedded
from app.client import OrderClient
from app.smtp_sink import SmtpSink
from app.telemetry import Telemetry, setup_telemetry
from orderflow.db import Product, make_engine
from orderflow.schema import upgrade
from orderflow.settings import Settings
from tests import temporal_env
from tests.fake_erp import FakeErp
from tests.fake_gateways import LocalStripe
from tests.postgres import PostgresCluster
from workers.temporal import Dependencies, build_workers

# every Settings and child process has the suite's codec key, whatever the developer's shell has
os.environ["ORDERFLOW_CODEC_KEY"] = temporal_env.TEST_CODEC_KEY.spec()
os.environ.pop("ORDERFLOW_CODEC_OLD_KEYS", None)

# the Stripe loop on localstripe (`system`, module-scoped: one per module that asks for it)
pytest_plugins = ["tests.stripe_system"]


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A real dev server; time skips only where a test fast-forwards a workflow."""
    async with await temporal_env.start_time_skipping() as environment:
        yield environment


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port, configured as in production (AOF, noeviction)."""
    data = tmp_path_factory.mktemp("redis")
    url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    proc = embedded.start_redis(url=url, data_dir=data, log=data / "redis.log")
    yield url
    embedded.stop(proc)


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """localstripe (a stateful fake Stripe API that sends signed webhooks) on a free port."""
    server = LocalStripe(tmp_path_factory.mktemp("localstripe") / "localstripe.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A real PostgreSQL cluster (Debian's, installed by `make install`) on a free port."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Settings:
    """Settings for the test session: its own data folder, the test Redis, the seed's numbers.

    The database is not chosen here: the `engine` fixture runs each test that touches it once
    on SQLite and once on PostgreSQL.
    """
    data = tmp_path_factory.mktemp("data")
    return Settings(
        data_dir=data, redis_url=redis_url, queue_prefix="bull", graceful_shutdown_seconds=5
    )


DATABASES = ("sqlite", "postgresql")


@pytest.fixture(scope="session", params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Each database-touching test runs on both: a SQLite file, and a fresh PostgreSQL database
    on the session's cluster (or on ORDERFLOW_TEST_DATABASE_URL's server, when set)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'orderflow.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return os.environ.get("ORDERFLOW_TEST_DATABASE_URL") or cluster.create_database()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """The session's database for one backend, migrated like `orderflow db upgrade` does."""
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def mail_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """A database of its own for tests that run the email processor without the session's."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('mail') / 'mail.db'}")
    upgrade(engine)
    return engine


@pytest.fixture(scope="session")
async def email_queue(settings: Settings) -> AsyncIterator[BullQueue]:
    """The real email-queue producer on the test Redis."""
    queue = BullQueue(
        "email-queue", {"connection": settings.redis_url, "prefix": settings.queue_prefix}
    )
    yield queue
    await queue.close()


@pytest.fixture(scope="session")
def erp() -> Iterator[FakeErp]:
    """An ERP over real HTTP that records what it receives."""
    server = FakeErp().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def deps(settings: Settings, engine: Engine, email_queue: Any, erp: FakeErp) -> Dependencies:
    """Real database and queue; the simulated gateway and an HTTP ERP stand in for outside systems."""
    return dataclasses.replace(
        Dependencies.from_settings(settings, engine, email_queue), erp=HttpErp(erp.url)
    )


@pytest.fixture(scope="session")
async def workers(
    env: WorkflowEnvironment, settings: Settings, deps: Dependencies
) -> AsyncIterator[list[Worker]]:
    """The four Temporal workers on the real task queues, running for the whole session."""
    running = build_workers(env.client, settings, deps)
    tasks = [asyncio.create_task(w.run()) for w in running]
    yield running
    await asyncio.gather(*(w.shutdown() for w in running))
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def orders(
    env: WorkflowEnvironment, settings: Settings, engine: Engine, workers: list[Worker]
) -> OrderClient:
    """The order service's client, with the workers running."""
    return OrderClient(env.client, settings, engine)


@pytest.fixture
def catalogue(engine: Engine) -> Callable[..., dict[str, str]]:
    """Create fresh SKUs for one test: catalogue(laptop=(price, stock), ...) → {name: sku}."""

    def make(**products: tuple[float, int]) -> dict[str, str]:
        tag = uuid.uuid4().hex[:6]
        skus = {name: f"{name}-{tag}" for name in products}
        with Session(engine) as session:
            for name, (price, stock) in products.items():
                session.add(Product(sku=skus[name], name=name, price=price, on_hand=stock))
            session.commit()
        return skus

    return make


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    """A real SMTP sink on a free port, keeping this test's mail in its own folder."""
    server = SmtpSink(tmp_path / "mail", "127.0.0.1", embedded.free_port()).start()
    yield server
    server.stop()


# session-wide: OTel installs its global providers once per process, and the tests that take
# `engine` run twice (SQLite, PostgreSQL), which would otherwise set this module up again
@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    """Every span the process finishes from here on."""
    return InMemorySpanExporter()


@pytest.fixture(scope="session")
def telemetry(settings: Settings, spans: InMemorySpanExporter) -> Iterator[Telemetry]:
    """The process's OTel globals, as `orderflow run` installs them, plus an in-memory exporter."""
    installed = setup_telemetry(settings, span_exporter=spans)
    yield installed
    installed.shutdown()
