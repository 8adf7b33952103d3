"""Bridge worker process: the email worker (and the webhook worker when given its processor).

Run alone with `python -m workers.bridge` (SIGTERM/SIGINT shut it down gracefully), or from
`orderflow run` through `run_bridge_workers` and `start_smtp_sink`/`stop_smtp_sink`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping

from bridge.email import EmailProcessor
from bridge.job import Processor
from bridge.redis_client import RedisClient
from bridge.runtime import BackoffStrategy, BridgeWorker
from bridge.specs import EMAIL_QUEUE, QueueSpec, queue_specs
from orderflow.settings import Settings
from orderflow.smtp_sink import SmtpSink, start_smtp_sink, stop_smtp_sink

__all__ = ["install_signal_handlers", "run_bridge_workers", "start_smtp_sink", "stop_smtp_sink"]
log = logging.getLogger("orderflow.bridge")


async def run_bridge_workers(
    settings: Settings,
    stop: asyncio.Event,
    processors: Mapping[str, Processor] | None = None,
    *,
    specs: Mapping[str, QueueSpec] | None = None,
    backoff_strategies: Mapping[str, BackoffStrategy] | None = None,
) -> None:
    """Run one BridgeWorker per queue until `stop` is set, then shut down gracefully.

    processors: queue name -> processor; the email queue gets EmailProcessor unless given one,
    and the payment webhook queue runs only when its processor is given
    (e.g. `{WEBHOOK_QUEUE: webhook_processor}`). specs default to queue_specs(settings).
    After `stop`, active jobs get settings.bridge_grace_seconds to finish; the rest go back
    to the queue for another worker. Returns when every worker has stopped.
    """
    specs = dict(specs or queue_specs(settings))
    chosen = dict(processors or {})
    email_client = RedisClient(settings.redis_url, name="orderflow:email-delivery")
    if EMAIL_QUEUE not in chosen and EMAIL_QUEUE in specs:
        chosen[EMAIL_QUEUE] = EmailProcessor(settings, specs[EMAIL_QUEUE], email_client)
    strategies = backoff_strategies or {}
    workers = [
        BridgeWorker(
            specs[name], processor, settings.redis_url, backoff_strategy=strategies.get(name)
        )
        for name, processor in chosen.items()
    ]
    log.info("bridge workers running: %s", ", ".join(w.spec.name for w in workers))
    try:
        await asyncio.gather(*(w.run(stop, settings.bridge_grace_seconds) for w in workers))
    finally:
        await email_client.close()


def install_signal_handlers(stop: asyncio.Event) -> None:
    """Set `stop` on SIGTERM and SIGINT (call from inside the running event loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    sink: SmtpSink | None = start_smtp_sink(settings) if settings.embedded_smtp else None
    try:
        await run_bridge_workers(settings, stop)
    finally:
        if sink is not None:
            stop_smtp_sink(sink)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command
    asyncio.run(_main(Settings.from_env()))
