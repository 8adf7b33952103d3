"""What an operator sees on `/ops` and `/readyz` while Redis, Temporal or the database is down:
an answer within seconds that names the backend and its setting, and every part still readable."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from app import embedded
from app.backends import BackendUnavailableError, check_database, check_redis
from app.client import OrderClient
from app.telemetry import setup_telemetry
from app.web.app import create_app
from app.web.dashboard import form_token
from bridge.producer import QueueProducer
from orderflow.db import make_engine
from orderflow.settings import Settings
from tests.helpers import pending_order, served_ops
from tests.postgres import PostgresCluster
from tests.test_telemetry import add_orders, sample
from workers.queues import email_spec

ANSWER_WITHIN = 10.0  # generous: the page's own limit per backend is 5 s, asked at once
Catalogue = Callable[..., dict[str, str]]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A redis-server of this test's own, so the test can stop it: (URL, process)."""
    url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    proc = embedded.start_redis(url=url, data_dir=tmp_path / "redis", log=tmp_path / "redis.log")
    yield url, proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)  # a frozen one must be able to take SIGTERM
    embedded.stop(proc)


async def _get(base: str, settings: Settings, path: str) -> tuple[httpx.Response, float]:
    """GET `path` as the signed-in admin; the answer and how long it took."""
    auth = (settings.admin_user, settings.admin_password)
    async with httpx.AsyncClient(base_url=base, auth=auth, timeout=ANSWER_WITHIN) as http:
        started = time.monotonic()
        response = await http.get(path)
        return response, time.monotonic() - started


async def _ready_until(
    base: str, settings: Settings, down: list[str], caplog: pytest.LogCaptureFixture
) -> dict[str, Any]:
    """`/readyz` as a load balancer reads it: every probe answers 503 within its limit and names
    every backend in `down`; within three probes exactly those are down (one probe that also
    finds another backend slow on a loaded machine is retried, as a balancer's threshold would).
    """
    answers = []
    for _ in range(3):
        ready, took = await _get(base, settings, "/readyz")
        assert ready.status_code == 503 and took < ANSWER_WITHIN, (ready.status_code, took)
        answers.append(ready.json())
        assert set(down) <= set(answers[-1]["down"]), answers[-1]
        if list(answers[-1]["down"]) == down:
            return answers[-1]
    reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith("not ready")]
    raise AssertionError(f"three probes found more than {down} down: {answers}; {reasons}")


def _outages(page: str) -> dict[str, str]:
    """The outage banner's entries: backend → its text."""
    found = re.findall(r'<li data-backend="(\w+)" data-setting="\w+">([^<]*)</li>', page)
    return {backend: unescape(text) for backend, text in found}


def _shows_bridge_queue(page: str, queue: str) -> bool:
    return f'<tr data-queue="{queue}">' in page


def _shows_task_queues(page: str) -> bool:
    return '<tr data-task-queue="orders" data-type="workflow">' in page


async def test_ops_with_redis_stopped_names_redis_and_still_shows_task_queues_and_orders(
    settings: Settings,
    own_redis: tuple[str, Any],
    orders: OrderClient,
    engine: Engine,
    catalogue: Catalogue,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_url, redis = own_redis
    skus = catalogue(lamp=(150_000, 5))
    order = await pending_order(orders, [(skus["lamp"], 1)])
    local = settings.model_copy(update={"redis_url": redis_url})
    async with served_ops(local, redis_url, orders, engine, "redis-down") as (base, used, spec):
        healthy, _ = await _get(base, used, "/ops")
        assert healthy.status_code == 200 and _shows_bridge_queue(healthy.text, spec.name)
        embedded.stop(redis)

        response, took = await _get(base, used, "/ops")
        assert response.status_code == 200 and took < ANSWER_WITHIN
        outages = _outages(response.text)
        assert list(outages) == ["redis"]
        assert f"cannot reach Redis at {redis_url} (ORDERFLOW_REDIS_URL)" in outages["redis"]
        assert not _shows_bridge_queue(response.text, spec.name)
        assert _shows_task_queues(response.text)  # Temporal still answers
        assert f'<tr data-order="{order.id}">' in response.text  # and the database

        ready = await _ready_until(base, used, ["redis"], caplog)
        assert ready["backends"] == {"redis": "down", "temporal": "ok", "database": "ok"}
        assert "ORDERFLOW_REDIS_URL" in ready["down"]["redis"]


async def test_ops_with_redis_frozen_answers_within_its_time_limit(
    settings: Settings,
    own_redis: tuple[str, Any],
    orders: OrderClient,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_url, redis = own_redis
    local = settings.model_copy(update={"redis_url": redis_url})
    async with served_ops(local, redis_url, orders, engine, "redis-frozen") as (base, used, _):
        os.kill(redis.pid, signal.SIGSTOP)  # connections are accepted, nothing is answered
        response, took = await _get(base, used, "/ops")
        assert response.status_code == 200 and took < ANSWER_WITHIN
        assert "(ORDERFLOW_REDIS_URL): no answer in 5 s" in _outages(response.text)["redis"]
        assert _shows_task_queues(response.text)
        await _ready_until(base, used, ["redis"], caplog)


async def test_ops_with_temporal_unreachable_names_its_address_and_still_shows_queues_and_orders(
    settings: Settings, redis_url: str, engine: Engine, catalogue: Catalogue
) -> None:
    nowhere = f"127.0.0.1:{embedded.free_port()}"  # nothing listens here
    local = settings.model_copy(update={"temporal_address": nowhere})
    client = await Client.connect(nowhere, lazy=True)
    down = OrderClient(client, local, engine)
    async with served_ops(local, redis_url, down, engine, "temporal-down") as (base, used, spec):
        response, took = await _get(base, used, "/ops")
        assert response.status_code == 200 and took < ANSWER_WITHIN
        outages = _outages(response.text)
        assert list(outages) == ["temporal"]
        assert f"cannot reach Temporal at {nowhere}, namespace default" in outages["temporal"]
        assert "(ORDERFLOW_TEMPORAL_ADDRESS)" in outages["temporal"]
        assert _shows_bridge_queue(response.text, spec.name)
        assert not _shows_task_queues(response.text)

        ready, took = await _get(base, used, "/readyz")
        assert ready.status_code == 503 and took < ANSWER_WITHIN
        assert ready.json()["backends"] == {"redis": "ok", "temporal": "down", "database": "ok"}
        assert "ORDERFLOW_TEMPORAL_ADDRESS" in ready.json()["down"]["temporal"]


async def test_ops_with_the_database_unreachable_names_it_without_its_password(
    settings: Settings, redis_url: str, env: WorkflowEnvironment
) -> None:
    port = embedded.free_port()  # no PostgreSQL listens here
    password = f"pw-{uuid.uuid4().hex[:8]}"
    unreachable = make_engine(f"postgresql+psycopg://orderflow:{password}@127.0.0.1:{port}/shop")
    local = settings.model_copy(update={"database_url": unreachable.url.render_as_string(False)})
    down = OrderClient(env.client, local, unreachable)
    async with served_ops(local, redis_url, down, unreachable, "db-down") as (base, used, spec):
        response, took = await _get(base, used, "/ops")
        assert response.status_code == 200 and took < ANSWER_WITHIN
        outages = _outages(response.text)
        assert list(outages) == ["database"]
        where = f"postgresql+psycopg://127.0.0.1:{port}/shop (ORDERFLOW_DATABASE_URL)"
        assert f"cannot reach the database at {where}" in outages["database"]
        assert password not in response.text
        assert _shows_bridge_queue(response.text, spec.name) and _shows_task_queues(response.text)

        ready, took = await _get(base, used, "/readyz")
        assert ready.status_code == 503 and took < ANSWER_WITHIN
        assert ready.json()["backends"] == {"redis": "ok", "temporal": "ok", "database": "down"}
        assert "ORDERFLOW_DATABASE_URL" in ready.json()["down"]["database"]
        assert password not in ready.text
    unreachable.dispose()


async def test_readyz_answers_200_when_every_backend_answers(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine
) -> None:
    async with served_ops(settings, redis_url, orders, engine, "ready") as (base, used, _):
        ready, _ = await _get(base, used, "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "backends": {"redis": "ok", "temporal": "ok", "database": "ok"},
    }


async def test_metrics_with_redis_frozen_answers_without_its_queue_gauges(
    settings: Settings, own_redis: tuple[str, Any], engine: Engine
) -> None:
    redis_url, redis = own_redis
    local = settings.model_copy(update={"redis_url": redis_url, "metrics_cache_seconds": 0})
    spec = email_spec(local).with_(name=f"metrics-frozen-{uuid.uuid4().hex[:8]}")
    producer = QueueProducer.connect(spec, redis_url)
    telemetry = setup_telemetry(local, install_global=False)
    app = create_app(local, producer, engine=engine, telemetry=telemetry, queues={spec.name: spec})
    transport = httpx.ASGITransport(app=app)
    gauge = f'bullmq_queue_jobs{{bullmq_queue_name="{spec.name}"'
    add_orders(engine, CANCELLED=1)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
            healthy = await http.get("/metrics")
            assert healthy.status_code == 200 and gauge in healthy.text
            os.kill(redis.pid, signal.SIGSTOP)
            for _ in range(2):  # a second scrape is not held behind the first one's read
                started = time.monotonic()
                frozen = await http.get("/metrics")
                assert frozen.status_code == 200 and time.monotonic() - started < ANSWER_WITHIN
                assert gauge not in frozen.text  # absent, not stale: an alert on absent() fires
                assert sample(frozen.text, "orderflow_orders", status="CANCELLED") >= 1  # database
    finally:
        await producer.close()
        telemetry.shutdown()


async def test_ops_retry_button_with_redis_frozen_answers_naming_redis(
    settings: Settings, own_redis: tuple[str, Any], orders: OrderClient, engine: Engine
) -> None:
    redis_url, redis = own_redis
    local = settings.model_copy(update={"redis_url": redis_url})
    async with served_ops(local, redis_url, orders, engine, "retry-frozen") as (base, used, spec):
        os.kill(redis.pid, signal.SIGSTOP)
        token = form_token(used.dashboard_secret, used.admin_user, int(time.time()))
        auth = (used.admin_user, used.admin_password)
        async with httpx.AsyncClient(base_url=base, auth=auth, timeout=ANSWER_WITHIN) as http:
            started = time.monotonic()
            answer = await http.post(
                f"/ops/queues/{spec.name}/jobs/job-1/retry", data={"token": token}
            )
            assert answer.status_code == 303 and time.monotonic() - started < ANSWER_WITHIN
            flash = parse_qs(urlsplit(answer.headers["location"]).query)["error"][0]
        assert flash.startswith(f"cannot reach Redis at {redis_url} (ORDERFLOW_REDIS_URL)")


def _postgres_pids(cluster: PostgresCluster) -> list[int]:
    """The postmaster and every process it started (backends, background workers)."""
    main = int((cluster.folder / "data" / "postmaster.pid").read_text().split()[0])
    pids = [main]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == main:
                pids.append(int(entry.name))
    return pids


async def test_readyz_probes_while_the_database_is_frozen_leave_redis_reported_up(
    redis_url: str,
) -> None:
    """A PostgreSQL that accepts and never answers (frozen): each probe's `SELECT 1` waits on a
    thread until the database answers again. Probes every few seconds must not pile those
    threads up until the process's thread pool is full: then the next Redis connect (its name
    is looked up on that pool) waits too, and Redis is reported down while it answers."""
    cluster = PostgresCluster().start()
    engine = make_engine(cluster.create_database())
    pids: list[int] = []
    try:
        # pooled connections, as a running app has them
        await asyncio.gather(*(check_database(engine) for _ in range(5)))
        pids = _postgres_pids(cluster)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        for _ in range(8):  # a load balancer's probes, 1 s apart here
            with pytest.raises(BackendUnavailableError, match="the database"):
                await check_database(engine, seconds=1.0)
        by_name = redis_url.replace("127.0.0.1", "localhost")  # looked up, as `redis:6379` is
        await check_redis(by_name, seconds=3.0)  # Redis answers: it is up
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        engine.dispose()
        cluster.stop()
