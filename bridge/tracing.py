"""Trace context inside bridge jobs, and a span plus metrics around every job a worker runs.

The W3C context travels where Node's BullMQ with `bullmq-otel` keeps it: job opts `tm`, a JSON
string of the propagator's carrier (`{"traceparent": "00-…"}`), so traces continue across Node
and Python producers and workers. Span names and attributes follow BullMQ's own telemetry
(`add <queue>.<name>` as PRODUCER, `process <queue>` as CONSUMER, `bullmq.*` attributes), and the
metric names follow its MetricNames. Everything goes through the OTel global providers, which
app.telemetry.setup_telemetry installs; without it, spans and metrics are no-ops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

from bullmq import UnrecoverableError
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

from bridge.job import Job, Processor

TRACE_OPT = "tm"  # bullmq-otel's job option for the propagation carrier (telemetry.metadata)
SCOPE = "orderflow.bridge"  # instrumentation scope of bridge spans and metrics
QUEUE_NAME = "bullmq.queue.name"  # BullMQ TelemetryAttributes
JOB_NAME = "bullmq.job.name"
JOB_ID = "bullmq.job.id"
ATTEMPTS_MADE = "bullmq.job.attempts.made"
# job durations from a millisecond SMTP hand-off to a minute-long timeout
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

A = TypeVar("A", bound=Callable[..., Awaitable[str]])


def tracing_enabled() -> bool:
    """False until an SDK TracerProvider is installed: then every span is a no-op, so skip it."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def trace_current() -> bool:
    """True if a valid span is current (inject_trace would put its context in job opts)."""
    return trace.get_current_span().get_span_context().is_valid


def inject_trace(opts: MutableMapping[str, Any]) -> None:
    """Put the current trace context in job opts (kept if the job already carries one)."""
    if opts.get(TRACE_OPT) or not trace.get_current_span().get_span_context().is_valid:
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if carrier:
        opts[TRACE_OPT] = json.dumps(carrier, separators=(",", ":"))


def job_context(opts: dict[str, Any]) -> Context | None:
    """The trace context a job carries, or None (absent or unreadable metadata)."""
    raw = opts.get(TRACE_OPT)
    if not isinstance(raw, str):
        return None
    try:
        carrier = json.loads(raw)
    except ValueError:
        return None
    return propagate.extract(carrier) if isinstance(carrier, dict) else None


@contextmanager
def producer_span(queue: str, name: str) -> Iterator[Span]:
    """BullMQ's `add <queue>.<name>` PRODUCER span, current for the add."""
    tracer = trace.get_tracer(SCOPE)
    attributes = {QUEUE_NAME: queue, JOB_NAME: name, "bullmq.queue.operation": "add"}
    with tracer.start_as_current_span(
        f"add {queue}.{name}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


def traced_add(add: A) -> A:
    """Decorate a producer's `add(name, data, opts)` with the PRODUCER span."""

    @wraps(add)
    async def wrapper(self: Any, name: str, data: Any, opts: Any = None) -> str:
        if not tracing_enabled():
            return await add(self, name, data, opts)
        with producer_span(self.spec.name, name) as span:
            job_id = await add(self, name, data, opts)
            span.set_attribute(JOB_ID, job_id)
            return job_id

    return wrapper  # type: ignore[return-value]


class InstrumentedProcessor:
    """Runs a processor inside a CONSUMER span continuing the job's trace, and records metrics."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self._labels: dict[tuple[str, str], dict[str, str]] = {}
        meter = metrics.get_meter(SCOPE)
        self.duration = meter.create_histogram(
            "bullmq.job.duration",
            unit="s",
            description="Processing time of one job attempt",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.completed = meter.create_counter(
            "bullmq.jobs.completed", description="Job attempts that completed"
        )
        self.failed = meter.create_counter(
            "bullmq.jobs.failed", description="Jobs that failed for good (no attempts left)"
        )
        self.retried = meter.create_counter(
            "bullmq.jobs.retried", description="Failed job attempts that will be retried"
        )

    async def __call__(self, job: Job) -> Any:
        """Process one attempt of `job`."""
        labels = self._labels.get((job.queue, job.name))
        if labels is None:  # one dict per job name, not one per job
            labels = self._labels[(job.queue, job.name)] = {
                QUEUE_NAME: job.queue,
                JOB_NAME: job.name,
            }
        if not tracing_enabled():
            return await self._measured(job, labels)
        tracer = trace.get_tracer(SCOPE)
        attributes: dict[str, str | int] = {
            **labels,
            JOB_ID: job.id,
            ATTEMPTS_MADE: job.attempts_made,
        }
        with tracer.start_as_current_span(
            f"process {job.queue}",
            context=job_context(job.opts),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ):
            return await self._measured(job, labels)

    async def _measured(self, job: Job, labels: dict[str, str]) -> Any:
        started = time.perf_counter()
        try:
            result = await self.processor(job)
        except asyncio.CancelledError:  # a timeout or a shutdown: the runtime decides
            self.duration.record(time.perf_counter() - started, labels)
            raise
        except Exception as err:
            self.duration.record(time.perf_counter() - started, labels)
            final = isinstance(err, UnrecoverableError) or job.attempts_made + 1 >= job.attempts
            (self.failed if final else self.retried).add(1, labels)
            raise
        self.duration.record(time.perf_counter() - started, labels)
        self.completed.add(1, labels)
        return result


@contextmanager
def client_span(name: str, **attributes: str) -> Iterator[Span]:
    """A CLIENT span for a call to an outside system (e.g. the SMTP hand-off)."""
    with trace.get_tracer(SCOPE).start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span
