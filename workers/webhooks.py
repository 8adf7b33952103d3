"""The payment webhook worker's processor, built from its dependencies for `run_bridge_workers`."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from bridge.job import Processor
from orderflow.contracts.payment import WEBHOOK_QUEUE
from orderflow.settings import Settings
from payments.webhook import Orders, WebhookProcessor


def build_webhook_processor(settings: Settings, order_client: Orders, engine: Engine) -> Processor:
    """The processor of payment-webhook-queue: `{WEBHOOK_QUEUE: build_webhook_processor(...)}`."""
    return WebhookProcessor(order_client, engine, queue=WEBHOOK_QUEUE)


def webhook_processors(
    settings: Settings, order_client: Orders, engine: Engine
) -> dict[str, Processor]:
    """The mapping `run_bridge_workers(settings, stop, processors)` takes, for the webhook queue."""
    return {WEBHOOK_QUEUE: build_webhook_processor(settings, order_client, engine)}
