"""What create_app adds for operators: tracing, webhook counts, `/metrics` and the `/ops` dashboard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from sqlalchemy.engine import Engine

from app.client import OrderClient
from app.telemetry import Telemetry
from app.web.dashboard import dashboard_router
from app.web.metrics import ApiRequests, WebhookOutcomes, metrics_router
from bridge.specs import QueueSpec
from orderflow.settings import Settings
from workers.queues import queue_specs
from workers.temporal import TASK_QUEUES


def add_operations(
    app: FastAPI,
    settings: Settings,
    *,
    orders: OrderClient | None = None,
    engine: Engine | None = None,
    telemetry: Telemetry | None = None,
    queues: Mapping[str, QueueSpec] | None = None,
    task_queues: Sequence[str] | None = None,
) -> None:
    """Instrument `app`; add `/metrics` with telemetry and `/ops` with an order client.

    `/ops` shows `queues` (default: every bridge queue) and the Temporal `task_queues` (default:
    every worker's).
    """
    specs = dict(queues or queue_specs(settings))
    engine = engine if engine is not None else (orders.engine if orders is not None else None)
    app.add_middleware(WebhookOutcomes)
    app.add_middleware(ApiRequests)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=telemetry.tracer_provider if telemetry else None,
        meter_provider=telemetry.meter_provider if telemetry else None,
        excluded_urls="/metrics,/healthz",
        # one span per request, not one more per ASGI message (body read, head and body
        # written): those carry nothing a trace reader uses and cost the app ~2 spans a call
        exclude_spans=["receive", "send"],
    )
    if telemetry is not None and not settings.metrics_port:
        app.include_router(metrics_router(telemetry, specs, settings, engine))
    if orders is not None and engine is not None:
        app.include_router(
            dashboard_router(
                settings, specs, orders, engine, TASK_QUEUES if task_queues is None else task_queues
            )
        )
