"""Every process's own port (ORDERFLOW_METRICS_PORT): `GET /metrics` and `GET /healthz`.

The http part also serves both on its app; this port is what a workflows or bridge process
offers, so a scaled-out deployment is scraped and health-checked process by process.
"""

from __future__ import annotations

from collections.abc import Collection

import uvicorn
from fastapi import APIRouter, FastAPI

from app.web.app import EmbeddedServer
from orderflow.settings import Settings


def probe_app(parts: Collection[str], metrics: APIRouter) -> FastAPI:
    """This process's `/metrics` (app.web.metrics.metrics_router) and a liveness answer."""
    app = FastAPI(title="orderflow probe", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        """Liveness: the process's event loop answers."""
        return {"status": "ok", "parts": sorted(parts)}

    app.include_router(metrics)
    return app


def probe_server(settings: Settings, app: FastAPI) -> uvicorn.Server:
    """The probe on settings.metrics_host:metrics_port, to run with `await server.serve()`."""
    config = uvicorn.Config(
        app,
        host=settings.metrics_host,
        port=settings.metrics_port,
        log_level="warning",
        access_log=False,
    )
    return EmbeddedServer(config)
