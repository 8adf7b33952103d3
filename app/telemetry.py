"""OpenTelemetry for the whole process, from settings: traces, metrics, Temporal's own metrics.

Traces go to OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set, and nowhere
otherwise. Metrics are read by a Prometheus reader on a registry of this Telemetry's own that
`GET /metrics` serves (and also pushed over OTLP when an endpoint is set). Temporal's SDK
metrics come from a Runtime whose MetricBuffer a MetricsExporter drains into the same
MeterProvider, so one scrape shows them all. The providers are installed as the OTel globals,
which the bridge, the Temporal interceptor and the FastAPI instrumentation use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry
from temporalio.contrib.opentelemetry import MetricsExporter
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig

from orderflow.errors import OrderflowError
from orderflow.settings import Settings

log = logging.getLogger("orderflow.telemetry")

METRIC_BUFFER_SIZE = 10_000  # Temporal metric updates held between 1 s drains; ample for a worker
OTLP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@dataclass
class GaugeReadings:
    """What the observable gauges report; refreshed from Redis and the database at scrape time."""

    queue_jobs: dict[tuple[str, str], int] = field(default_factory=dict)  # (queue, state) -> n
    orders: dict[str, int] = field(default_factory=dict)  # status -> n
    codec_keys: list[str] = field(default_factory=list)  # key ids, the current one first

    def observe_queue_jobs(self, _: CallbackOptions) -> Iterable[Observation]:
        """bullmq.queue.jobs{bullmq.queue.name, state}."""
        for (queue, state), n in sorted(self.queue_jobs.items()):
            yield Observation(n, {"bullmq.queue.name": queue, "state": state})

    def observe_orders(self, _: CallbackOptions) -> Iterable[Observation]:
        """orderflow.orders{status}."""
        for status, n in sorted(self.orders.items()):
            yield Observation(n, {"status": status})

    def observe_codec_keys(self, _: CallbackOptions) -> Iterable[Observation]:
        """orderflow.codec.keys{key_id, role}: 1 per key this process holds (ids, no secrets)."""
        for position, key_id in enumerate(self.codec_keys):
            yield Observation(1, {"key_id": key_id, "role": "old" if position else "current"})


@dataclass
class Telemetry:
    """The process's tracer and meter providers, its scrape registry and Temporal runtime."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    registry: CollectorRegistry
    temporal_runtime: Runtime
    temporal_buffer: MetricBuffer
    gauges: GaugeReadings

    def temporal_metrics(self) -> MetricsExporter:
        """Drains Temporal's metric buffer into the meter provider; run it as `async with`."""
        return MetricsExporter(self.temporal_buffer, self.meter_provider)

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def otlp_enabled() -> bool:
    """Whether an OTLP endpoint is configured (the standard OTel environment variables)."""
    return any(os.environ.get(name) for name in OTLP_ENV)


def setup_telemetry(
    settings: Settings, *, span_exporter: SpanExporter | None = None, install_global: bool = True
) -> Telemetry:
    """Build the providers (and install them as the OTel globals unless told not to).

    span_exporter: an extra exporter fed span by span (tests pass an InMemorySpanExporter).
    """
    resource = Resource.create({"service.name": settings.service_name})
    tracer_provider = TracerProvider(resource=resource)
    if span_exporter is not None:
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    registry = CollectorRegistry()
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
    if otlp_enabled():
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        log.info("exporting traces and metrics over OTLP")
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if install_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    buffer = MetricBuffer(METRIC_BUFFER_SIZE)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    gauges = GaugeReadings()
    meter = meter_provider.get_meter("orderflow")
    meter.create_observable_gauge(
        "bullmq.queue.jobs",
        callbacks=[gauges.observe_queue_jobs],
        description="Jobs per bridge queue and state (waiting, active, delayed, failed, dlq, ...)",
    )
    meter.create_observable_gauge(
        "orderflow.orders", callbacks=[gauges.observe_orders], description="Orders by status"
    )
    try:
        gauges.codec_keys = settings.codec_keyring().ids
    except OrderflowError as err:  # the start fails on it with its own message; no gauge then
        log.warning("codec keys not shown on /metrics: %s", err)
    meter.create_observable_gauge(
        "orderflow.codec.keys",
        callbacks=[gauges.observe_codec_keys],
        description="Codec keys this process holds: the current one encrypts, old ones decrypt",
    )
    return Telemetry(tracer_provider, meter_provider, registry, runtime, buffer, gauges)
