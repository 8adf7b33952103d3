"""Bridge queues declared once (issue 19): every registered queue is complete, and a throwaway
queue registered in a test gets its worker, its /ops row and its gauges without another file."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from app.client import OrderClient
from app.telemetry import Telemetry
from app.web.app import create_app
from bridge.job import Job
from orderflow.db import make_engine
from orderflow.settings import QueueSettings, Settings
from tests.helpers import eventually
from workers import queues
from workers.bridge import run_bridge_workers
from workers.queues import BridgeQueue, UnknownQueueError, Wiring, producer_for, queue_specs

SCRATCH = "scratch-queue"
SCRATCH_GROUP = QueueSettings(concurrency=2, attempts=1, backoff_ms=100, timeout_seconds=5.0)
seen: list[Job] = []


async def _record(job: Job) -> str:
    seen.append(job)
    return "done"


# the whole declaration of a queue of the tests' own: the module and this one registration
SCRATCH_QUEUE = BridgeQueue(
    name=SCRATCH,
    job_names=("scratch-job",),
    settings_of=lambda settings: SCRATCH_GROUP,  # a real queue's group is a field of Settings
    processor=lambda wiring: _record,
)


@pytest.fixture
def scratch() -> Iterator[BridgeQueue]:
    """The scratch queue in the registry for one test."""
    queues.register(SCRATCH_QUEUE)
    yield SCRATCH_QUEUE
    queues.unregister(SCRATCH)


@pytest.fixture
def own_prefix(settings: Settings) -> Settings:
    """The session's settings under a key prefix of this test's own (every queue is fresh)."""
    return settings.model_copy(
        update={"queue_prefix": f"t{uuid.uuid4().hex[:8]}", "metrics_cache_seconds": 0}
    )


class _NoOrders:
    """Stands in for the order client: a factory only keeps it (nothing here is paid)."""


@pytest.mark.parametrize("name", [*(q.name for q in queues.registered()), SCRATCH])
def test_every_registered_queue_is_complete(
    name: str, settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Job names, a settings group its spec is built from, and a processor factory that builds
    a processor from what `orderflow run` has (the built-in queues, and the tests' own)."""
    if name == SCRATCH:
        request.getfixturevalue("scratch")
    queue = queues.get(name)
    assert queue.job_names and all(queue.job_names), name
    group = queue.settings_of(settings)
    assert isinstance(group, QueueSettings), name
    spec = queue_specs(settings)[name]
    assert spec == queue.spec(settings)
    assert (spec.name, spec.job_names, spec.prefix) == (
        name,
        queue.job_names,
        settings.queue_prefix,
    )
    assert (spec.concurrency, spec.attempts, spec.timeout_seconds) == (
        group.concurrency,
        group.attempts,
        group.timeout_seconds,
    )
    assert spec.backoff == {"type": "exponential", "delay": group.backoff_ms}
    assert (spec.rate_limit is None) == (group.rate_max is None)
    engine = make_engine(f"sqlite:///{tmp_path / 'unused.db'}")
    wiring = Wiring(settings, spec, engine, orders=_NoOrders())  # type: ignore[arg-type]
    assert callable(queue.processor(wiring)), f"{name}: no processor under `orderflow run`"
    engine.dispose()


def test_a_queue_name_is_registered_once_and_an_unknown_one_is_named() -> None:
    queues.register(BridgeQueue(SCRATCH, ("x",), lambda s: SCRATCH_GROUP, lambda w: None))
    try:
        with pytest.raises(ValueError, match="registered twice"):
            queues.register(BridgeQueue(SCRATCH, ("y",), lambda s: SCRATCH_GROUP, lambda w: None))
    finally:
        queues.unregister(SCRATCH)
    with pytest.raises(UnknownQueueError, match="expected one of email-queue, payment-webhook"):
        producer_for(Settings(), "no-such-queue")


async def test_a_throwaway_queue_registered_in_a_test_gets_a_worker(
    scratch: BridgeQueue, own_prefix: Settings, tmp_path: Path
) -> None:
    """run_bridge_workers, as `orderflow run` calls it, runs the registered scratch queue."""
    seen.clear()
    stop = asyncio.Event()
    engine = make_engine(f"sqlite:///{tmp_path / 'mail.db'}")  # the email worker's; no mail sent
    workers = asyncio.create_task(run_bridge_workers(own_prefix, stop, engine=engine))
    producer = producer_for(own_prefix, SCRATCH)
    try:
        job_id = await producer.add("scratch-job", {"n": 1})

        async def processed() -> bool:
            return any(job.id == job_id for job in seen)

        await eventually(processed, 20, "the scratch queue's job processed by its worker")
        assert [job.name for job in seen] == ["scratch-job"]
        assert not workers.done()
    finally:
        stop.set()
        await asyncio.wait_for(workers, 30)
        await producer.close()
        engine.dispose()


def _gauged_queues(text: str) -> set[str]:
    return {
        s.labels["bullmq_queue_name"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "bullmq_queue_jobs" and s.labels.get("state") == "dlq"
    }


async def test_every_registered_queue_is_on_ops_and_metrics(
    scratch: BridgeQueue,
    own_prefix: Settings,
    orders: OrderClient,
    engine: Engine,
    telemetry: Telemetry,
) -> None:
    producer = producer_for(own_prefix, SCRATCH)
    app = create_app(own_prefix, producer, orders=orders, engine=engine, telemetry=telemetry)
    auth = (own_prefix.admin_user, own_prefix.admin_password)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http:
            metrics = await http.get("/metrics")
            page = await http.get("/ops", auth=auth)
    finally:
        await producer.close()
    assert metrics.status_code == 200 and page.status_code == 200, page.text[:500]
    names = {queue.name for queue in queues.registered()}
    assert SCRATCH in names
    assert _gauged_queues(metrics.text) >= names
    rows: set[Any] = set(re.findall(r'<tr data-queue="([^"]+)">', page.text))
    assert rows >= names
