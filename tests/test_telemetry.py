"""Traces and metrics: one paid order is one trace; /metrics counts a known mix of jobs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from bullmq import UnrecoverableError
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app import embedded
from app.client import OrderClient
from app.smtp_sink import SmtpSink
from app.telemetry import Telemetry
from app.temporal_tracing import CausalTracingInterceptor
from app.web.app import create_app
from app.web.metrics import metrics_router, order_counts
from app.web.probe import probe_app
from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.redis_client import RedisClient
from bridge.specs import QueueSpec
from mail.processor import EmailProcessor
from orderflow.contracts.order import ORDERS_TASK_QUEUE
from orderflow.db import Order
from orderflow.settings import Settings
from payments.providers import signed_headers
from payments.providers.stripe import stripe_payment_succeeded
from tests.bridge_helpers import eventually, running
from tests.helpers import new_order_id, pending_order, wait_status
from tests.test_bridge_node import node, run_node, where  # noqa: F401 (node is a fixture)
from workers.queues import build_webhook_processor, email_spec, webhook_spec
from workers.temporal import Dependencies, build_workers

Catalogue = Callable[..., dict[str, str]]


def unique(spec: QueueSpec, kind: str) -> QueueSpec:
    """A spec on a prefix and queue name of this test's own."""
    tag = uuid.uuid4().hex[:8]
    return spec.with_(prefix=f"t{tag}", name=f"{kind}-{tag}")


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


# ---- metrics -------------------------------------------------------------------------------


async def test_metrics_scrape_counts_a_known_mix_of_jobs(
    telemetry: Telemetry, settings: Settings, redis_url: str, engine: Engine
) -> None:
    spec = unique(email_spec(settings), "mix").with_(
        attempts=2, backoff={"type": "fixed", "delay": 10}, rate_limit=None
    )
    hooks = unique(webhook_spec(settings), "hooks")
    producer = QueueProducer.connect(spec, redis_url)
    for i in range(4):
        await producer.add("ok", {"i": i}, {"jobId": f"ok-{i}"})
    await producer.add("flaky", {}, {"jobId": "flaky-1"})  # fails once, then completes
    await producer.add("bad", {}, {"jobId": "bad-1"})  # unrecoverable: DLQ at once
    await producer.add("bad", {}, {"jobId": "bad-2", "attempts": 1})  # out of attempts: DLQ
    await producer.add("later", {}, {"jobId": "later-1", "delay": 3_600_000})

    async def process(job: Job) -> str:
        if job.name == "flaky" and job.attempts_made == 0:
            raise RuntimeError("transient")
        if job.id == "bad-1":
            raise UnrecoverableError("permanent")
        if job.name == "bad":
            raise RuntimeError("still broken")
        return "done"

    async with running(spec, process, redis_url):
        await eventually(lambda: _finished(producer, spec, 5, 2))
    await producer.add("ok", {}, {"jobId": "ok-waiting"})  # nobody consumes it now

    webhook_producer = QueueProducer.connect(hooks, redis_url)
    fresh = settings.model_copy(update={"metrics_cache_seconds": 0})  # every scrape reads
    app = create_app(
        fresh,
        webhook_producer,
        engine=engine,
        telemetry=telemetry,
        queues={spec.name: spec, hooks.name: hooks},
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        before = (await http.get("/metrics")).text
        add_orders(engine, CANCELLED=2, SHIPPED=1)
        body = stripe_payment_succeeded("o-metrics", 1000, event_id=f"evt_m_{uuid.uuid4().hex[:6]}")
        ok = await http.post(
            "/webhooks/stripe", content=body, headers=signed_headers("stripe", body, settings)
        )
        assert ok.status_code == 200
        for _ in range(2):
            bad = await http.post(
                "/webhooks/stripe", content=body, headers={"Stripe-Signature": "t=1,v1=00"}
            )
            assert bad.status_code == 400
        response = await http.get("/metrics")
    await webhook_producer.close()
    await producer.close()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text

    q = {"bullmq_queue_name": spec.name}
    assert sample(text, "bullmq_jobs_completed_total", **q) == 5
    assert sample(text, "bullmq_jobs_completed_total", **q, bullmq_job_name="ok") == 4
    assert sample(text, "bullmq_jobs_failed_total", **q) == 2
    assert sample(text, "bullmq_jobs_retried_total", **q, bullmq_job_name="flaky") == 1
    assert sample(text, "bullmq_job_duration_seconds_count", **q) == 8  # 4 + 2 + 1 + 1 attempts
    assert sample(text, "bullmq_job_duration_seconds_bucket", **q, le="+Inf") == 8
    depth = {
        state: sample(text, "bullmq_queue_jobs", **q, state=state)
        for state in ("waiting", "active", "delayed", "completed", "failed", "dlq")
    }
    assert depth == {
        "waiting": 1,
        "active": 0,
        "delayed": 1,
        "completed": 5,
        "failed": 2,
        "dlq": 2,
    }
    assert sample(text, "bullmq_queue_jobs", bullmq_queue_name=hooks.name, state="waiting") == 1

    def webhooks(outcome: str, scrape: str) -> float:
        return sample(scrape, "orderflow_webhooks_total", provider="stripe", outcome=outcome)

    assert webhooks("accepted", text) - webhooks("accepted", before) == 1
    assert webhooks("rejected", text) - webhooks("rejected", before) == 2

    for status, n in order_counts(engine).items():
        assert sample(text, "orderflow_orders", status=status) == n
    assert (
        sample(text, "orderflow_orders", status="CANCELLED")
        - sample(before, "orderflow_orders", status="CANCELLED")
        == 2
    )
    assert (
        sample(text, "orderflow_orders", status="SHIPPED")
        - sample(before, "orderflow_orders", status="SHIPPED")
        == 1
    )


async def test_metrics_scrape_is_cached_and_takes_no_database_write_lock(
    telemetry: Telemetry, settings: Settings, redis_url: str, engine: Engine
) -> None:
    spec = unique(email_spec(settings), "cached")
    producer = QueueProducer.connect(spec, redis_url)
    cached = settings.model_copy(update={"metrics_cache_seconds": 3600})
    app = create_app(cached, producer, engine=engine, telemetry=telemetry, queues={spec.name: spec})
    info = RedisClient(redis_url)
    await producer.add("send-welcome", {"to": "a@example.com"})  # (its connection is open now)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        first = (await http.get("/metrics")).text
        connections = _stat(await info.execute("INFO", "stats"), "total_connections_received")
        await producer.add("send-welcome", {"to": "a@example.com"})
        add_orders(engine, REFUNDED=1)
        scrapes = [(await http.get("/metrics")).text for _ in range(20)]
        after = _stat(await info.execute("INFO", "stats"), "total_connections_received")
    assert after == connections  # no connection opened per scrape
    q = {"bullmq_queue_name": spec.name, "state": "waiting"}
    assert sample(first, "bullmq_queue_jobs", **q) == 1
    assert all(sample(s, "bullmq_queue_jobs", **q) == sample(first, "bullmq_queue_jobs", **q) for s in scrapes)  # fmt: skip
    if engine.url.get_backend_name() == "sqlite":
        # a writer holds SQLite's write lock: a scrape still answers at once, and fresh
        fresh = settings.model_copy(update={"metrics_cache_seconds": 0})
        app = create_app(fresh, producer, engine=engine, telemetry=telemetry, queues={spec.name: spec})  # fmt: skip
        writer = sqlite3.connect(str(engine.url.database), isolation_level=None, timeout=30)
        writer.execute("BEGIN IMMEDIATE")
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                response = await asyncio.wait_for(http.get("/metrics"), 5)
        finally:
            writer.rollback()
            writer.close()
        assert sample(response.text, "bullmq_queue_jobs", **q) == 2
        for status, n in order_counts(engine).items():
            assert sample(response.text, "orderflow_orders", status=status) == n
    await producer.close()
    await info.close()


async def test_metrics_behind_a_token_or_on_an_internal_port(
    telemetry: Telemetry, settings: Settings, redis_url: str
) -> None:
    spec = unique(email_spec(settings), "guarded")
    producer = QueueProducer.connect(spec, redis_url)
    guarded = settings.model_copy(update={"metrics_token": "scrape-7f3a"})
    app = create_app(guarded, producer, telemetry=telemetry, queues={spec.name: spec})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = await http.get("/metrics", headers={"Authorization": "Bearer scrape-7f3a"})
        assert right.status_code == 200 and "bullmq_queue_jobs" in right.text
    internal = settings.model_copy(update={"metrics_port": embedded.free_port()})
    public = create_app(internal, producer, telemetry=telemetry, queues={spec.name: spec})
    private = probe_app(
        ["http"], metrics_router(telemetry, {spec.name: spec}, internal, None)
    )  # what the runner serves on metrics_port
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=public), base_url="http://t"
    ) as http:
        assert (await http.get("/metrics")).status_code == 404
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=private), base_url="http://t"
    ) as http:
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/healthz")).json()["parts"] == ["http"]
    await producer.close()


def _stat(info: str, name: str) -> int:
    return int(
        next(line.split(":")[1] for line in info.splitlines() if line.startswith(name + ":"))
    )


def add_orders(engine: Engine, **statuses: int) -> None:
    """Order rows as the order activities write them, n per status."""
    with Session(engine) as session:
        for status, n in statuses.items():
            for _ in range(n):
                order_id = new_order_id()
                session.add(
                    Order(
                        id=order_id, customer_id="c-metrics", email=f"{order_id}@example.com",
                        status=status, total=1000, currency="INR",
                    )
                )  # fmt: skip
        session.commit()


async def _finished(producer: QueueProducer, spec: QueueSpec, done: int, dead: int) -> bool:
    client = producer.client
    completed = await client.execute("ZCARD", f"{spec.prefix}:{spec.name}:completed")
    dlq = await client.execute("ZCARD", f"{spec.prefix}:{spec.dlq}:index")
    return int(completed) == done and int(dlq) == dead


async def test_temporal_sdk_metrics_are_on_the_scrape(
    telemetry: Telemetry, settings: Settings, env: WorkflowEnvironment, redis_url: str
) -> None:
    client = await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        runtime=telemetry.temporal_runtime,
    )
    producer = QueueProducer.connect(unique(webhook_spec(settings), "unused"), redis_url)
    app = create_app(settings, producer, telemetry=telemetry, queues={})
    async with (
        telemetry.temporal_metrics(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        [_ async for _ in client.list_workflows("WorkflowType='OrderWorkflow'", limit=1)]

        async def requests_counted() -> bool:
            text = (await http.get("/metrics")).text
            return sample(text, "temporal_request_total", operation="ListWorkflowExecutions") >= 1

        await eventually(requests_counted, within=10)
    await producer.close()


# ---- one trace from the webhook to the SMTP send --------------------------------------------


@pytest.fixture
async def traced(
    telemetry: Telemetry,
    env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    redis_url: str,
    sink: SmtpSink,
) -> AsyncIterator[tuple[OrderClient, httpx.AsyncClient, Settings]]:
    """The whole path with tracing: HTTP app, webhook worker, Temporal workers, email worker."""
    mail = settings.model_copy(update={"smtp_host": sink.host, "smtp_port": sink.port})
    client = Client(
        env.client.service_client,
        namespace=env.client.namespace,
        interceptors=[CausalTracingInterceptor()],
    )
    email = unique(email_spec(mail), "mail")
    hooks = unique(webhook_spec(mail), "hooks")
    email_producer = QueueProducer.connect(email, redis_url)
    webhook_producer = QueueProducer.connect(hooks, redis_url)
    suffix = f"-traced-{uuid.uuid4().hex[:6]}"
    deps = Dependencies.from_settings(mail, engine, email_producer)
    workers: list[Worker] = build_workers(
        client, mail, deps, task_queue_suffix=suffix, queues=[ORDERS_TASK_QUEUE]
    )
    tasks = [asyncio.create_task(w.run()) for w in workers]
    orders = OrderClient(client, mail, engine, task_queue=ORDERS_TASK_QUEUE + suffix)
    app = create_app(mail, webhook_producer, telemetry=telemetry, queues={})
    async with (
        running(email, EmailProcessor(mail, email, engine), redis_url),
        running(hooks, build_webhook_processor(mail, orders, engine), redis_url),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield orders, http, mail
    await asyncio.gather(*(w.shutdown() for w in workers))
    await asyncio.gather(*tasks, return_exceptions=True)
    for closeable in (email_producer, webhook_producer):
        await closeable.close()


def chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """Names from `span` up to its trace's root (stops where a parent was not exported)."""
    names = [span.name]
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_paid_order_is_one_trace_from_webhook_to_smtp(
    traced: tuple[OrderClient, httpx.AsyncClient, Settings],
    spans: InMemorySpanExporter,
    sink: SmtpSink,
    catalogue: Catalogue,
) -> None:
    orders, http, settings = traced
    skus = catalogue(lamp=(129_900, 5))
    order_id = (await pending_order(orders, [(skus["lamp"], 1)], customer_id="cust-otel")).id

    body = stripe_payment_succeeded(order_id, 129900, event_id=f"evt_otel_{order_id}")
    response = await http.post(
        "/webhooks/stripe", content=body, headers=signed_headers("stripe", body, settings)
    )
    assert response.status_code == 200, response.text
    await wait_status(orders, order_id, "CONFIRMED")
    [mail] = await sink.store.wait_for(1, within=20, to=f"{order_id}@example.com")
    assert order_id in mail.subject

    def smtp_span() -> ReadableSpan | None:
        """The SMTP send of this order's confirmation (other tests' mails may be traced too)."""
        finished = spans.get_finished_spans()
        by_id = {s.context.span_id: s for s in finished}
        job_id = f"order-confirmation-{order_id}"
        for s in finished:
            parent = by_id.get(s.parent.span_id) if s.name == "smtp send" and s.parent else None
            if parent is not None and _attr(parent, "bullmq.job.id") == job_id:
                return s
        return None

    await eventually(lambda: _true(_jobs_done(spans, smtp_span())))
    smtp = smtp_span()
    assert smtp is not None
    trace_id = smtp.context.trace_id
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    path = chain(smtp, by_id)
    root = by_id[_root_id(smtp, by_id)]
    assert root.name == "POST /webhooks/stripe", path
    hooks_queue = next(s.name for s in in_trace if s.name.startswith("process hooks-"))
    email_queue = next(s.name for s in in_trace if s.name.startswith("process mail-"))
    expected = [
        "smtp send",
        email_queue,
        f"add {email_queue.removeprefix('process ')}.send-order-confirmation",
        "RunActivity:notify",
        "StartActivity:notify",
        "HandleUpdate:pay",
        "StartWorkflowUpdate:pay",
        hooks_queue,
        f"add {hooks_queue.removeprefix('process ')}.stripe-webhook",
        "POST /webhooks/stripe",
    ]
    assert path == expected
    names = {s.name for s in in_trace}
    assert {"StartActivity:confirm_order", "RunActivity:confirm_order"} <= names
    # the checkout that started the order is a trace of its own
    start = [s for s in spans.get_finished_spans() if s.name == "StartWorkflow:OrderWorkflow"]
    assert all(s.context.trace_id != trace_id for s in start)


def _attr(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {}).get(key)


def _root_id(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> int:
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
    return span.context.span_id


def _jobs_done(spans: InMemorySpanExporter, smtp: ReadableSpan | None) -> bool:
    # the webhook job's span ends after its last database write, which may come after the mail
    if smtp is None:
        return False
    trace_id = smtp.context.trace_id
    names = [s.name for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    return all(any(n.startswith(f"process {q}-") for n in names) for q in ("mail", "hooks"))


async def _true(value: bool) -> bool:
    return value


async def test_node_bullmq_reads_our_trace_context_as_bullmq_otel_metadata(
    telemetry: Telemetry,
    spans: InMemorySpanExporter,
    settings: Settings,
    redis_url: str,
    node: str,  # noqa: F811 (the fixture imported above)
) -> None:
    spec = unique(email_spec(settings), "node")
    producer = QueueProducer.connect(spec, redis_url)
    with trace.get_tracer("test").start_as_current_span("checkout") as parent:
        await producer.add("send-welcome", {"to": "a@example.com"}, {"jobId": "traced"})
    await producer.add("send-welcome", {"to": "b@example.com"}, {"jobId": "untraced"})
    await producer.close()
    seen = await run_node(node, "inspect.js", *where(spec, redis_url), "traced", "untraced")
    metadata = json.loads(seen["jobs"]["traced"]["telemetry"]["metadata"])
    _, trace_id, span_id, _ = metadata["traceparent"].split("-")
    assert int(trace_id, 16) == parent.get_span_context().trace_id
    # what a Node worker continues is our PRODUCER span, a child of the caller's span
    [add] = [s for s in spans.get_finished_spans() if s.context.span_id == int(span_id, 16)]
    assert add.name == f"add {spec.name}.send-welcome" and add.parent is not None
    assert add.parent.span_id == parent.get_span_context().span_id
    # outside any span the add span starts a trace of its own, as in Node BullMQ
    other = json.loads(seen["jobs"]["untraced"]["telemetry"]["metadata"])["traceparent"]
    assert other.split("-")[1] != trace_id
