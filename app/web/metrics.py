"""`GET /metrics` (Prometheus text) and the webhook outcome counter."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Response
from opentelemetry import metrics
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.telemetry import GaugeReadings, Telemetry
from bridge.admin import QueueAdmin
from bridge.specs import QueueSpec
from orderflow.db import Order

# queue states reported by bullmq.queue.jobs (getJobCounts types plus the DLQ)
KNOWN_PROVIDERS = ("stripe", "razorpay")  # label values; any other path counts as "other"
DEPTH_STATES = (
    "waiting",
    "active",
    "delayed",
    "prioritized",
    "paused",
    "completed",
    "failed",
    "dlq",
)


async def refresh_queue_depths(
    gauges: GaugeReadings, specs: Mapping[str, QueueSpec], redis_url: str
) -> None:
    """Read every queue's counts into the gauges."""
    depths: dict[tuple[str, str], int] = {}
    for spec in specs.values():
        admin = QueueAdmin(spec, redis_url)
        try:
            counts = (await admin.counts()).to_dict()
        finally:
            await admin.close()
        depths.update({(spec.name, state): int(counts[state]) for state in DEPTH_STATES})
    gauges.queue_jobs = depths


def order_counts(engine: Engine) -> dict[str, int]:
    """Orders by status, from the database."""
    with Session(engine) as session:
        rows = session.exec(select(Order.status, func.count()).group_by(Order.status)).all()
    return {status: int(n) for status, n in rows}


def metrics_router(
    telemetry: Telemetry, specs: Mapping[str, QueueSpec], redis_url: str, engine: Engine | None
) -> APIRouter:
    """`GET /metrics`: queue depths and orders are read fresh, then every metric is rendered."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        """Prometheus scrape."""
        await refresh_queue_depths(telemetry.gauges, specs, redis_url)
        if engine is not None:
            telemetry.gauges.orders = await asyncio.to_thread(order_counts, engine)
        return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    return router


class WebhookOutcomes:
    """ASGI middleware counting webhook answers: accepted (2xx), rejected (4xx), failed (5xx)."""

    def __init__(self, app: ASGIApp, prefix: str = "/webhooks/") -> None:
        self.app = app
        self.prefix = prefix
        self.counter = metrics.get_meter("orderflow.web").create_counter(
            "orderflow.webhooks", description="Payment webhooks answered, by provider and outcome"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and count its answer."""
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(self.prefix):
            return await self.app(scope, receive, send)
        status: dict[str, Any] = {}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            code = status.get("code", 500)
            outcome = "accepted" if code < 400 else "rejected" if code < 500 else "failed"
            provider = path[len(self.prefix) :].strip("/")
            provider = provider if provider in KNOWN_PROVIDERS else "other"
            self.counter.add(1, {"provider": provider, "outcome": outcome, "code": str(code)})
