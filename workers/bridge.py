"""Bridge workers: one per registered queue (workers/queues.py) whose processor can be built.

Run by `orderflow run` (or `orderflow run --part bridge` on a host of their own).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from sqlalchemy.engine import Engine

from bridge.job import Processor
from bridge.runtime import BackoffStrategy, BridgeWorker
from bridge.specs import QueueSpec
from orderflow.db import make_engine
from orderflow.settings import Settings
from payments.payment_events import Orders
from workers.queues import Wiring, find, queue_specs

log = logging.getLogger("orderflow.bridge")


async def run_bridge_workers(
    settings: Settings,
    stop: asyncio.Event,
    processors: Mapping[str, Processor] | None = None,
    *,
    orders: Orders | None = None,
    specs: Mapping[str, QueueSpec] | None = None,
    backoff_strategies: Mapping[str, BackoffStrategy] | None = None,
    engine: Engine | None = None,
) -> None:
    """Run one BridgeWorker per queue until `stop` is set, then shut down gracefully.

    Each queue gets the processor given for it, else the one its registered factory builds; a
    queue whose factory cannot build one here (the payment webhook queue without `orders`) runs
    no worker. After `stop`, active jobs get settings.bridge_grace_seconds to finish; the rest go
    back to the queue for another worker.

    Args:
        settings: The process's settings (Redis, the queues' groups, the grace period).
        stop: Set it to shut the workers down.
        processors: Queue name -> processor, instead of the factory's (tests, benchmarks).
        orders: The order client the factories may use (the webhook queue needs it).
        specs: Queue name -> spec; default every registered queue's (`queue_specs(settings)`).
        backoff_strategies: Queue name -> a custom backoff strategy.
        engine: The database the factories use (default: the settings' database).

    Returns:
        When every worker has stopped.
    """
    specs = dict(specs or queue_specs(settings))
    chosen = dict(processors or {})
    for name, spec in specs.items():
        if name in chosen or (queue := find(name)) is None:
            continue
        engine = engine if engine is not None else make_engine(settings.db_url)
        if (processor := queue.processor(Wiring(settings, spec, engine, orders))) is not None:
            chosen[name] = processor
    strategies = backoff_strategies or {}
    workers = [
        BridgeWorker(
            specs[name], processor, settings.redis_url, backoff_strategy=strategies.get(name)
        )
        for name, processor in chosen.items()
    ]
    log.info("bridge workers running: %s", ", ".join(w.spec.name for w in workers))
    await asyncio.gather(*(w.run(stop, settings.bridge_grace_seconds) for w in workers))
