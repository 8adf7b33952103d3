"""The HTTP app factory: one FastAPI app that every HTTP-facing part of orderflow adds routes to."""

from __future__ import annotations

from fastapi import FastAPI

from orderflow.settings import Settings
from orderflow.web.webhooks import JobQueue, webhook_router


def create_app(settings: Settings, webhook_queue: JobQueue) -> FastAPI:
    """The app: `POST /webhooks/{stripe,razorpay}` enqueue on `webhook_queue`; `GET /healthz`."""
    app = FastAPI(title="orderflow", docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.include_router(webhook_router(settings, webhook_queue))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the app answers."""
        return {"status": "ok"}

    return app
