"""Bridge workers: the email worker, and the payment webhook worker when given its processor.

Run by `orderflow run` (or `orderflow run --part bridge` on a host of their own).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from sqlalchemy.engine import Engine

from bridge.job import Processor
from bridge.runtime import BackoffStrategy, BridgeWorker
from bridge.specs import QueueSpec, queue_specs
from mail.processor import EmailProcessor
from orderflow.contracts.mail import EMAIL_QUEUE
from orderflow.contracts.payment import WEBHOOK_QUEUE, GatewayName
from orderflow.db import make_engine
from orderflow.settings import Settings
from payments.gateway import make_gateway
from payments.payment_events import Orders
from payments.processor import UPDATE_WAIT_SECONDS, WebhookProcessor

log = logging.getLogger("orderflow.bridge")


async def run_bridge_workers(
    settings: Settings,
    stop: asyncio.Event,
    processors: Mapping[str, Processor] | None = None,
    *,
    specs: Mapping[str, QueueSpec] | None = None,
    backoff_strategies: Mapping[str, BackoffStrategy] | None = None,
    engine: Engine | None = None,
) -> None:
    """Run one BridgeWorker per queue until `stop` is set, then shut down gracefully.

    processors: queue name -> processor; the email queue gets EmailProcessor unless given one,
    and the payment webhook queue runs only when its processor is given
    (e.g. `{WEBHOOK_QUEUE: webhook_processor}`). specs default to queue_specs(settings); the
    email processor records deliveries in `engine` (default: the settings' database).
    After `stop`, active jobs get settings.bridge_grace_seconds to finish; the rest go back
    to the queue for another worker. Returns when every worker has stopped.
    """
    specs = dict(specs or queue_specs(settings))
    chosen = dict(processors or {})
    if EMAIL_QUEUE not in chosen and EMAIL_QUEUE in specs:
        engine = engine if engine is not None else make_engine(settings.db_url)
        chosen[EMAIL_QUEUE] = EmailProcessor(settings, specs[EMAIL_QUEUE], engine)
    strategies = backoff_strategies or {}
    workers = [
        BridgeWorker(
            specs[name], processor, settings.redis_url, backoff_strategy=strategies.get(name)
        )
        for name, processor in chosen.items()
    ]
    log.info("bridge workers running: %s", ", ".join(w.spec.name for w in workers))
    await asyncio.gather(*(w.run(stop, settings.bridge_grace_seconds) for w in workers))


def build_webhook_processor(settings: Settings, order_client: Orders, engine: Engine) -> Processor:
    """The processor of payment-webhook-queue: `{WEBHOOK_QUEUE: build_webhook_processor(...)}`.

    Its reconciliation job compares with the configured gateway's own list (not the simulated
    one's: it keeps no books).
    """
    gateway = None if settings.gateway == GatewayName.SIMULATED else make_gateway(settings, engine)
    return WebhookProcessor(
        order_client,
        engine,
        queue=WEBHOOK_QUEUE,
        outage_window_seconds=settings.webhook_outage_window_seconds,
        unknown_order_window_seconds=settings.webhook_unknown_order_window_seconds,
        gateway=gateway,
        # a pay update still running at half the job's timeout is waited for from the delayed set
        update_wait_seconds=min(UPDATE_WAIT_SECONDS, settings.webhook_timeout_seconds / 2),
    )


def webhook_processors(
    settings: Settings, order_client: Orders, engine: Engine
) -> dict[str, Processor]:
    """The mapping `run_bridge_workers(settings, stop, processors)` takes, for the webhook queue."""
    return {WEBHOOK_QUEUE: build_webhook_processor(settings, order_client, engine)}
