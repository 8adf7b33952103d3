"""`GET /metrics` (Prometheus text) and the webhook outcome counter.

A scrape is cheap: queue depths come from one pipelined round trip over one connection kept
open, order counts from a read-only database connection (no SQLite write lock), and both are
cached for settings.metrics_cache_seconds whatever the scrape rate. With settings.metrics_token
a scrape needs `Authorization: Bearer <token>`; with settings.metrics_port it is served only
by a separate app on that (internal) port.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Response
from opentelemetry import metrics
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import create_engine, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.backends import (
    DATABASE,
    REDIS,
    BackendUnavailableError,
    database_location,
    redact_url,
    within,
)
from app.telemetry import GaugeReadings, Telemetry
from bridge.connect import redis_client
from bridge.dlq import DeadLetterQueue
from bridge.redis_client import RedisClient
from bridge.scripts import Keys
from bridge.specs import QueueSpec
from orderflow.db import Order
from orderflow.settings import Settings
from payments import providers

log = logging.getLogger(__name__)
# queue states reported by bullmq.queue.jobs (getJobCounts types plus the DLQ)
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


# the Redis structure behind each state (BullMQ's getJobCounts reads the same ones)
_DEPTH_READS = {
    "waiting": ("LLEN", "wait"),
    "active": ("LLEN", "active"),
    "delayed": ("ZCARD", "delayed"),
    "prioritized": ("ZCARD", "prioritized"),
    "paused": ("LLEN", "paused"),
    "completed": ("ZCARD", "completed"),
    "failed": ("ZCARD", "failed"),
}


async def queue_depths(
    client: RedisClient, specs: Mapping[str, QueueSpec]
) -> dict[tuple[str, str], int]:
    """Every queue's jobs per state (and its DLQ size), in one pipelined round trip.

    Each DLQ is pruned first (entries whose job was retried elsewhere: DeadLetterQueue.prune),
    so the gauge counts what `/ops` lists.
    """
    commands: list[list[str | bytes | int | float]] = []
    labels: list[tuple[str, str]] = []
    for spec in specs.values():
        await DeadLetterQueue(spec, client).prune()
        keys = Keys(spec.prefix, spec.name)
        for state, (command, key) in _DEPTH_READS.items():
            commands.append([command, keys[key]])
            labels.append((spec.name, state))
        commands.append(["ZCARD", spec.dlq_keys[1]])
        labels.append((spec.name, "dlq"))
    replies = await client.pipeline(commands)
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return {label: int(n) for label, n in zip(labels, replies, strict=True)}


def read_only(engine: Engine) -> Engine:
    """An engine for reads that never takes SQLite's write lock (others: the engine itself)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return engine
    return create_engine(
        f"sqlite:///file:{url.database}?mode=ro&uri=true", connect_args={"check_same_thread": False}
    )


def order_counts(engine: Engine) -> dict[str, int]:
    """Orders by status, from the database."""
    with Session(engine) as session:
        rows = session.exec(select(Order.status, func.count()).group_by(Order.status)).all()
    return {status: int(n) for status, n in rows}


class MetricsReader:
    """Reads queue depths and order counts into the gauges, at most once per `max_age` seconds."""

    def __init__(
        self,
        gauges: GaugeReadings,
        specs: Mapping[str, QueueSpec],
        redis_url: str,
        engine: Engine | None,
        max_age: float,
    ) -> None:
        self.gauges = gauges
        self.specs = dict(specs)
        # on a Cluster: the slot of the queues' prefix (another one's keys follow MOVED)
        prefix = next(iter(self.specs.values())).prefix if self.specs else ""
        self.client = redis_client(redis_url, name="orderflow:metrics", prefix=prefix)
        self.redis_at = redact_url(redis_url)
        self.engine = read_only(engine) if engine is not None else None
        self.max_age = max_age
        self.read_at = -float("inf")
        self.lock = asyncio.Lock()  # concurrent scrapes share one read

    async def refresh(self) -> None:
        """Read again unless the last read is younger than max_age.

        Redis and the database are read at once, each within BACKEND_SECONDS; the gauges of one
        that fails are left empty (absent, not stale: an alert on `absent()` fires) and the next
        scrape reads again.
        """
        async with self.lock:
            if time.monotonic() - self.read_at < self.max_age:
                return
            reads: list[Awaitable[Any]] = [
                within(REDIS, self.redis_at, queue_depths(self.client, self.specs))
            ]
            if self.engine is not None:
                where = database_location(self.engine)
                reads.append(within(DATABASE, where, asyncio.to_thread(order_counts, self.engine)))
            depths, *counts = await asyncio.gather(*reads, return_exceptions=True)
            self.gauges.queue_jobs = depths if isinstance(depths, dict) else {}
            self.gauges.orders = counts[0] if counts and isinstance(counts[0], dict) else {}
            failed = [r for r in (depths, *counts) if isinstance(r, BaseException)]
            for err in failed:
                if not isinstance(err, BackendUnavailableError):
                    raise err
                log.warning("metrics: %s", err)
            if not failed:
                self.read_at = time.monotonic()


def metrics_router(
    telemetry: Telemetry,
    specs: Mapping[str, QueueSpec],
    settings: Settings,
    engine: Engine | None,
) -> APIRouter:
    """`GET /metrics`: cached queue depths and orders, then every metric rendered."""
    router = APIRouter()
    reader = MetricsReader(
        telemetry.gauges, specs, settings.redis_url, engine, settings.metrics_cache_seconds
    )
    token = settings.metrics_token

    @router.get("/metrics", include_in_schema=False)
    async def scrape(authorization: Annotated[str, Header()] = "") -> Response:
        """Prometheus scrape."""
        if token and not _bearer_matches(authorization, token):
            raise HTTPException(401, "metrics token required", {"WWW-Authenticate": "Bearer"})
        await reader.refresh()
        return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _bearer_matches(authorization: str, token: str) -> bool:
    scheme, _, given = authorization.partition(" ")
    digest = hashlib.sha256
    same = hmac.compare_digest(digest(given.encode()).digest(), digest(token.encode()).digest())
    return scheme.lower() == "bearer" and same


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
            # label values: the registered providers; any other path counts as "other"
            provider = provider if provider in providers.names() else "other"
            self.counter.add(1, {"provider": provider, "outcome": outcome, "code": str(code)})


class ApiRequests:
    """ASGI middleware counting the order API's answers by operation and status code."""

    def __init__(self, app: ASGIApp, prefix: str = "/api/v1/") -> None:
        self.app = app
        self.prefix = prefix
        self.counter = metrics.get_meter("orderflow.web").create_counter(
            "orderflow.api.requests",
            description="Order API requests answered, by method, route template and status code",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and count its answer under its route's template."""
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
            route = getattr(scope.get("route"), "path", "") or "other"  # a template: bounded
            labels = {"method": scope.get("method", ""), "route": route}
            self.counter.add(1, {**labels, "code": str(status.get("code", 500))})


class CodecRequests:
    """ASGI middleware counting the codec endpoints' answers (app/web/codec.py) by operation
    (decode, encode, status, preflight), method and status code."""

    def __init__(self, app: ASGIApp, prefix: str = "/codec") -> None:
        self.app = app
        self.prefix = prefix
        self.counter = metrics.get_meter("orderflow.web").create_counter(
            "orderflow.codec.requests",
            description="Codec requests (Temporal UI, CLI) answered, by operation and status code",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and count its answer under its operation."""
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            return await self.app(scope, receive, send)
        status: dict[str, Any] = {}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        method = scope.get("method", "")
        rest = path[len(self.prefix) :].strip("/")
        operation = rest if rest in ("decode", "encode") else "status" if not rest else "other"
        if method == "OPTIONS":
            operation = "preflight"
        try:
            await self.app(scope, receive, capture)
        finally:
            labels = {"operation": operation, "method": method}
            self.counter.add(1, {**labels, "code": str(status.get("code", 500))})
