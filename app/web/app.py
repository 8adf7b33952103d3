"""The HTTP app factory: one FastAPI app that every HTTP-facing part of orderflow adds routes to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from app.backends import (
    DATABASE,
    NAMES,
    REDIS,
    SETTINGS,
    TEMPORAL,
    BackendUnavailableError,
    check_database,
    check_redis,
    check_temporal,
)
from app.client import OrderClient
from app.telemetry import Telemetry
from app.web.api_problems import PREFIX as API_PREFIX
from app.web.api_problems import install_problem_handlers
from app.web.codec import add_codec
from app.web.ingress import JobQueue, webhook_router
from app.web.ops import add_operations
from app.web.orders_api import orders_router
from bridge.specs import QueueSpec
from orderflow.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    webhook_queue: JobQueue,
    *,
    orders: OrderClient | None = None,
    engine: Engine | None = None,
    telemetry: Telemetry | None = None,
    queues: Mapping[str, QueueSpec] | None = None,
    task_queues: Sequence[str] | None = None,
) -> FastAPI:
    """The app: `POST /webhooks/{stripe,razorpay}` enqueue on `webhook_queue`; `GET /healthz`
    (liveness) and `GET /readyz` (Redis, and Temporal and the database where given, answer).

    With telemetry also `GET /metrics` (unless settings.metrics_port moves it to
    the per-process probe, app.web.probe); with an order client (and its engine) the `/ops`
    dashboard; queues default to every bridge queue, task_queues to every worker's (app.web.ops).
    Always `POST /codec/{encode,decode}`, the remote codec of the Temporal UI and CLI, behind the
    ops credentials (app.web.codec).
    """
    app = FastAPI(
        title="orderflow",
        summary="The order API: start orders, report payments, cancel, ship, return, review.",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{API_PREFIX}/openapi.json",
        openapi_tags=[
            {"name": "orders", "description": "For order services: bearer API keys."},
            {
                "name": "webhooks",
                "description": "For payment providers only, signed by them: not for order"
                " services (no API key opens them).",
            },
            {"name": "operations", "description": "Health for probes and load balancers."},
        ],
    )
    app.state.settings = settings
    app.include_router(webhook_router(settings, webhook_queue))
    if orders is not None:  # the order API (app/web/orders_api.py)
        install_problem_handlers(app)
        app.include_router(orders_router(settings, orders, engine or orders.engine))
    add_operations(
        app,
        settings,
        orders=orders,
        engine=engine,
        telemetry=telemetry,
        queues=queues,
        task_queues=task_queues,
    )

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the app answers."""
        return {"status": "ok"}

    add_readiness(app, settings, orders, engine)
    add_codec(app, settings)  # the Temporal UI's and CLI's codec server (app/web/codec.py)
    return app


def add_readiness(
    app: FastAPI, settings: Settings, orders: OrderClient | None, engine: Engine | None
) -> None:
    """`GET /readyz`: Redis, and Temporal and the database where the app uses them, answer."""
    checks: dict[str, Callable[[], Awaitable[None]]] = {
        REDIS: lambda: check_redis(settings.redis_url)
    }
    if orders is not None:
        checks[TEMPORAL] = lambda: check_temporal(orders.client, settings)
    database = engine if engine is not None else orders.engine if orders is not None else None
    if database is not None:
        checks[DATABASE] = lambda: check_database(database)

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Readiness: every backend this app uses answers (asked at once, each within 5 s).

        503 names each backend that is down and its setting; where and why are on `/ops` and in
        the log, not on this unauthenticated answer.
        """
        results = await asyncio.gather(
            *(check() for check in checks.values()), return_exceptions=True
        )
        down: dict[str, str] = {}
        for backend, result in zip(checks, results, strict=True):
            if isinstance(result, BackendUnavailableError):
                log.warning("not ready: %s", result)
                down[backend] = f"{NAMES[backend]} did not answer (check {SETTINGS[backend]})"
            elif isinstance(result, BaseException):
                raise result
        checked = {backend: "down" if backend in down else "ok" for backend in checks}
        if down:
            return JSONResponse({"status": "unavailable", "backends": checked, "down": down}, 503)
        return JSONResponse({"status": "ready", "backends": checked})


class EmbeddedServer(uvicorn.Server):
    """uvicorn that leaves SIGINT/SIGTERM to the process it runs in (set `should_exit` to stop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn 0.29+ installs its own handlers here; the runner owns the signals instead."""
        yield


def http_server(
    settings: Settings, app: FastAPI, *, host: str = "", port: int = 0
) -> uvicorn.Server:
    """A server for `app` on host:port (default settings.http_host:http_port); `await serve()`."""
    config = uvicorn.Config(
        app,
        host=host or settings.http_host,
        port=port or settings.http_port,
        log_level="warning",
        access_log=False,
    )
    return EmbeddedServer(config)
