"""The bridge queues of every domain, each declared once, and the registry that serves them.

A `BridgeQueue` holds everything about one queue: its name and job names (from its domain's
contract), its settings group (a `QueueSettings` in orderflow/settings.py) and how its processor
is built. The bridge workers (`run_bridge_workers`), `/ops`, `/metrics`, the queue cleanup,
`orderflow queues` and bull-board all read the registry; nothing else lists the queues. It lives
here, at the wiring level, because a processor needs what only a process has (the database, the
order client, the gateway), and `bridge/` knows no domain. Adding one: docs/EXTENDING.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from bridge.job import Processor
from bridge.producer import QueueProducer
from bridge.specs import QueueSpec, configured_spec
from mail.processor import EmailProcessor
from orderflow.contracts.mail import EMAIL_QUEUE, EMAIL_SYSTEM_FIELDS, EmailJob
from orderflow.contracts.payment import (
    WEBHOOK_QUEUE,
    WEBHOOK_SYSTEM_FIELDS,
    GatewayName,
    WebhookJob,
)
from orderflow.errors import OrderflowError
from orderflow.settings import QueueSettings, Settings
from payments.gateway import make_gateway
from payments.processor import UPDATE_WAIT_SECONDS, Orders, WebhookProcessor


@dataclass(frozen=True)
class Wiring:
    """What a queue's processor factory may use: what the process running its worker has."""

    settings: Settings
    """The process's settings."""
    spec: QueueSpec
    """The spec the worker runs with (a test's own queue name may differ from the declared)."""
    engine: Engine
    """The database."""
    orders: Orders | None = None
    """The order client (app/client.py), or None in a process that has none."""


@dataclass(frozen=True)
class BridgeQueue:
    """One bridge queue, declared once: everything its producers, workers and operators need."""

    name: str
    """The queue's name, from its domain's contract (`email-queue`)."""
    job_names: tuple[str, ...]
    """The job names its producers add and its processor takes."""
    settings_of: Callable[[Settings], QueueSettings]
    """Its settings group in `Settings` (`lambda s: s.email`: ORDERFLOW_EMAIL_*)."""
    processor: Callable[[Wiring], Processor | None]
    """Builds its processor; None when the process lacks what it needs (then no worker runs)."""
    system_fields: frozenset[str] = frozenset()
    """Job-data fields its producers generate, screened by name only (bridge/guard.py)."""

    def spec(self, settings: Settings) -> QueueSpec:
        """Its spec under these settings (its group's numbers, the shared prefix and limits)."""
        return configured_spec(
            self.name,
            self.job_names,
            self.settings_of(settings),
            settings,
            system_fields=self.system_fields,
        )


class UnknownQueueError(OrderflowError):
    """A queue name the registry does not hold."""

    def __init__(self, name: str) -> None:
        known = ", ".join(_REGISTRY) or "none"
        super().__init__(f"unknown bridge queue {name!r}: expected one of {known}")
        self.name = name


_REGISTRY: dict[str, BridgeQueue] = {}


def register(queue: BridgeQueue) -> BridgeQueue:
    """Add a queue (its declaration does this once, at import); the same name twice is a defect.

    Args:
        queue: The declaration.

    Returns:
        The same declaration, so a module can write `EMAIL = register(BridgeQueue(...))`.

    Raises:
        ValueError: Another declaration already holds the name.
    """
    if queue.name in _REGISTRY and _REGISTRY[queue.name] is not queue:
        raise ValueError(f"bridge queue {queue.name!r} is registered twice")
    _REGISTRY[queue.name] = queue
    return queue


def unregister(name: str) -> None:
    """Remove a queue (tests that register a throwaway one)."""
    _REGISTRY.pop(name, None)


def registered() -> tuple[BridgeQueue, ...]:
    """Every registered queue, in the order they were declared (the order /ops shows)."""
    return tuple(_REGISTRY.values())


def find(name: str) -> BridgeQueue | None:
    """The queue of this name, or None."""
    return _REGISTRY.get(name)


def get(name: str) -> BridgeQueue:
    """The queue of this name.

    Raises:
        UnknownQueueError: No queue of this name is registered (it names the known ones).
    """
    if (queue := find(name)) is None:
        raise UnknownQueueError(name)
    return queue


def queue_specs(settings: Settings) -> dict[str, QueueSpec]:
    """Every registered queue's spec, by name."""
    return {queue.name: queue.spec(settings) for queue in _REGISTRY.values()}


def producer_for(settings: Settings, queue: str) -> QueueProducer:
    """A producer for a registered queue by name (e.g. EMAIL_QUEUE), configured from settings.

    Raises:
        UnknownQueueError: No queue of this name is registered.
    """
    return QueueProducer.connect(get(queue).spec(settings), settings.redis_url)


# --- the declarations: one per domain queue ---


def _email_processor(wiring: Wiring) -> Processor:
    return EmailProcessor(wiring.settings, wiring.spec, wiring.engine)


def build_webhook_processor(settings: Settings, order_client: Orders, engine: Engine) -> Processor:
    """The processor of payment-webhook-queue, reporting payments to orders through the client.

    Its reconciliation job compares with the configured gateway's own list (not the simulated
    one's: it keeps no books).
    """
    gateway = None if settings.gateway == GatewayName.SIMULATED else make_gateway(settings, engine)
    return WebhookProcessor(
        order_client,
        engine,
        queue=WEBHOOK_QUEUE,
        outage_window_seconds=settings.webhook.outage_window_seconds,
        unknown_order_window_seconds=settings.webhook.unknown_order_window_seconds,
        gateway=gateway,
        # a pay update still running at half the job's timeout is waited for from the delayed set
        update_wait_seconds=min(UPDATE_WAIT_SECONDS, settings.webhook.timeout_seconds / 2),
    )


def _webhook_processor(wiring: Wiring) -> Processor | None:
    if wiring.orders is None:  # it reports payments to orders: nothing to do without a client
        return None
    return build_webhook_processor(wiring.settings, wiring.orders, wiring.engine)


EMAIL = register(
    BridgeQueue(
        name=EMAIL_QUEUE,
        job_names=tuple(EmailJob),
        settings_of=lambda settings: settings.email,
        processor=_email_processor,
        system_fields=EMAIL_SYSTEM_FIELDS,
    )
)
WEBHOOK = register(
    BridgeQueue(
        name=WEBHOOK_QUEUE,
        job_names=tuple(WebhookJob),
        settings_of=lambda settings: settings.webhook,
        processor=_webhook_processor,
        system_fields=WEBHOOK_SYSTEM_FIELDS,
    )
)


def email_spec(settings: Settings) -> QueueSpec:
    """The email queue's spec: concurrency 5, 3 attempts, exponential from 2 s, 100 jobs/s."""
    return EMAIL.spec(settings)


def webhook_spec(settings: Settings) -> QueueSpec:
    """The payment webhook queue's spec: concurrency 20, 5 attempts, exponential from 1 s."""
    return WEBHOOK.spec(settings)
