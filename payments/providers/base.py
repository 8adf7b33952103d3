"""The webhook provider's interface and the registry's mechanics (payments/providers/).

Provider modules import this module only, never each other or the package (import-linter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bridge.producer import job_id_problem
from orderflow.errors import OrderflowError
from orderflow.settings import Settings
from payments.events import EventKind, GatewayEvent, MalformedEventError

Headers = Mapping[str, str]  # a request's headers (Starlette's are case-insensitive)


@dataclass(frozen=True)
class WebhookProvider:
    """Everything the webhook side knows about one payment provider."""

    name: str
    """The route `/webhooks/<name>`, the metrics label and every event's `provider`."""
    title: str
    """How people write it (`Stripe`), for messages and docs."""
    signature_header: str
    """The header that carries the signature (`Stripe-Signature`)."""
    verify: Callable[[bytes, Headers, Settings], None]
    """Check a raw body's signature against the configured secret; raises SignatureError."""
    sign: Callable[[bytes, Settings, int | None, str | None], dict[str, str]]
    """The headers the provider would send with a body (payload, settings, timestamp, event
    id), signed with the configured secret: for tests, curl examples and benchmarks."""
    parse: Callable[[bytes, Headers], GatewayEvent]
    """Read a verified body (and its headers) into a GatewayEvent; raises MalformedEventError."""
    kinds: Mapping[str, EventKind]
    """Event type → what it means for an order (types not listed are IGNORED)."""
    order_id_field: str
    """Where its payloads carry our order id, named in errors (`data.object.metadata`)."""
    samples: Mapping[str, Callable[[str, int], bytes]] = field(default_factory=dict)
    """Sample bodies by outcome (`paid`, `failed`): maker(order_id, amount_minor)."""

    @property
    def job_name(self) -> str:
        """Its events' job name on payment-webhook-queue (`stripe-webhook`)."""
        return f"{self.name}-webhook"


class UnknownProviderError(OrderflowError):
    """A provider name the registry does not hold."""

    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        super().__init__(f"unknown webhook provider {name!r}: expected one of {known}")
        self.name = name


_REGISTRY: dict[str, WebhookProvider] = {}


def register(provider: WebhookProvider) -> WebhookProvider:
    """Add a provider (a module does this once, at import); the same name twice is a defect."""
    if provider.name in _REGISTRY and _REGISTRY[provider.name] is not provider:
        raise ValueError(f"webhook provider {provider.name!r} is registered twice")
    _REGISTRY[provider.name] = provider
    return provider


def unregister(name: str) -> None:
    """Remove a provider (tests that register a throwaway one)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> WebhookProvider:
    """The provider of this name, or UnknownProviderError naming the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownProviderError(name) from None


def names() -> list[str]:
    """Every registered provider's name, in registration order."""
    return list(_REGISTRY)


def all_providers() -> list[WebhookProvider]:
    """Every registered provider, in registration order."""
    return list(_REGISTRY.values())


def by_job_name(job_name: str) -> WebhookProvider | None:
    """The provider whose events carry this job name, if any."""
    return next((p for p in _REGISTRY.values() if p.job_name == job_name), None)


def parse_event(name: str, body: bytes, headers: Headers | None = None) -> GatewayEvent:
    """Read a verified webhook body of a registered provider; its id must make a valid job id."""
    try:
        provider = get(name)
    except UnknownProviderError as err:
        raise MalformedEventError(name, "", str(err)) from None
    event = provider.parse(body, headers or {})
    if why := job_id_problem(event.job_id):
        raise MalformedEventError(name, event.event_id, f"its id cannot be a job id: {why}")
    return event


def event_types(kind: EventKind) -> set[str]:
    """Every provider's event types that mean `kind`."""
    return {t for p in _REGISTRY.values() for t, k in p.kinds.items() if k is kind}
