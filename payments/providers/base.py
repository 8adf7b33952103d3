"""The payment provider's interface and the registry's mechanics (payments/providers/).

Provider modules import this module only, never each other or the package (import-linter);
so does payments/gateway.py, whose gateways' errors redact every registered provider's keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bridge.producer import job_id_problem
from orderflow.contracts.payment import GatewaySettingsSpec
from orderflow.errors import OrderflowError
from orderflow.settings import Settings
from payments.events import EventKind, GatewayEvent, MalformedEventError

if TYPE_CHECKING:
    from payments.gateway import PaymentGateway

Headers = Mapping[str, str]  # a request's headers (Starlette's are case-insensitive)


@dataclass(frozen=True)
class WebhookProvider:
    """Everything the system knows about one payment provider: its webhooks and its API side.

    A provider module builds one and `register`s it. The webhook fields are required; a
    provider that `ORDERFLOW_GATEWAY` can select also declares `gateway`, `key_patterns` and
    `settings` (its row of `GATEWAY_SETTINGS`).
    """

    name: str
    """The route `/webhooks/<name>`, the metrics label and every event's `provider`."""
    title: str
    """How people write it (`Stripe`), for messages and docs."""
    signature_header: str
    """The header that carries the signature (`Stripe-Signature`)."""
    verify: Callable[[bytes, Headers, Settings], None]
    """`verify(body, headers, settings)`: check a raw body's signature.

    Args: the raw request body, its headers, the settings holding the webhook secret.
    Raises: SignatureError when the signature is missing, forged, or (where the provider
    signs a timestamp) too old.
    """
    sign: Callable[[bytes, Settings, int | None, str | None], dict[str, str]]
    """`sign(payload, settings, timestamp, event_id)`: the headers the provider would send.

    Args: the body, the settings holding the secret, the signing time (None: now) and the
    event id (for providers that send it in a header). Returns: the request's headers, signed
    with the configured secret (for tests, curl examples and benchmarks).
    """
    parse: Callable[[bytes, Headers], GatewayEvent]
    """`parse(body, headers)`: read a verified body (and its headers) into a GatewayEvent.

    Raises: MalformedEventError when the body is not an event of this provider we can read.
    """
    kinds: Mapping[str, EventKind]
    """Event type → what it means for an order (types not listed are IGNORED)."""
    order_id_field: str
    """Where its payloads carry our order id, named in errors (`data.object.metadata`)."""
    samples: Mapping[str, Callable[[str, int], bytes]] = field(default_factory=dict)
    """Sample bodies by outcome (`paid`, `failed`): maker(order_id, amount_minor)."""
    gateway: Callable[[Settings], PaymentGateway] | None = None
    """`gateway(settings)`: its API client, with the keys from the settings (None: webhooks only).

    Returns: a PaymentGateway (payments/gateway.py) whose `name` is this provider's. Import
    the SDK inside it, so a deployment on another gateway never loads it.
    """
    key_patterns: tuple[str, ...] = ()
    """Regular expressions of its API keys (live, test, publishable), blanked from every
    gateway error that reaches a log or a job (`payments.gateway.without_keys`)."""
    settings: GatewaySettingsSpec | None = None
    """Its settings' row in `GATEWAY_SETTINGS` (orderflow/contracts/payment.py), read at start."""

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


class NoGatewayError(OrderflowError):
    """A registered provider that declares no gateway (webhooks only) was asked for one."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"webhook provider {name!r} declares no gateway: it cannot be ORDERFLOW_GATEWAY"
        )
        self.name = name


_REGISTRY: dict[str, WebhookProvider] = {}


def register(provider: WebhookProvider) -> WebhookProvider:
    """Add a provider; a provider module does this once, at import.

    Args:
        provider: the provider's declaration.

    Returns:
        The same provider (so a module can write `STRIPE = register(WebhookProvider(...))`).

    Raises:
        ValueError: another provider of the same name is registered (a defect).
    """
    if provider.name in _REGISTRY and _REGISTRY[provider.name] is not provider:
        raise ValueError(f"webhook provider {provider.name!r} is registered twice")
    _REGISTRY[provider.name] = provider
    return provider


def unregister(name: str) -> None:
    """Remove a provider (tests that register a throwaway one)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> WebhookProvider:
    """The provider of this name.

    Args:
        name: the provider's registry name (`stripe`), as in routes, jobs and ORDERFLOW_GATEWAY.

    Returns:
        The registered provider.

    Raises:
        UnknownProviderError: no provider of this name is registered (it names the known ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownProviderError(name) from None


def build_gateway(name: str, settings: Settings) -> PaymentGateway:
    """The API client of the provider of this name, with its keys from the settings.

    Args:
        name: the provider's registry name (ORDERFLOW_GATEWAY's value).
        settings: the settings its factory reads its keys and addresses from.

    Returns:
        The provider's PaymentGateway.

    Raises:
        UnknownProviderError: no provider of this name is registered.
        NoGatewayError: the provider declares webhooks only.
    """
    make = get(name).gateway
    if make is None:
        raise NoGatewayError(name)
    return make(settings)


def key_pattern() -> re.Pattern[str]:
    """One pattern matching any registered provider's API keys (`without_keys` blanks them).

    Built at each call from the registry as it is then (`re` caches the compiled pattern).
    """
    joined = "|".join(f"(?:{p})" for v in _REGISTRY.values() for p in v.key_patterns)
    return re.compile(joined or r"(?!)")  # no patterns: match nothing


def names() -> list[str]:
    """Every registered provider's name, in registration order."""
    return list(_REGISTRY)


def all_providers() -> list[WebhookProvider]:
    """Every registered provider, in registration order."""
    return list(_REGISTRY.values())


def by_job_name(job_name: str) -> WebhookProvider | None:
    """The provider whose events carry this job name.

    Args:
        job_name: a job's name on payment-webhook-queue (`stripe-webhook`).

    Returns:
        The provider, or None when no registered provider's events are named so.
    """
    return next((p for p in _REGISTRY.values() if p.job_name == job_name), None)


def parse_event(name: str, body: bytes, headers: Headers | None = None) -> GatewayEvent:
    """Read a verified webhook body of a registered provider.

    Args:
        name: the provider's registry name.
        body: the raw body, its signature already checked.
        headers: the request's headers (some providers send the event id in one).

    Returns:
        The event, reduced to what an order needs.

    Raises:
        MalformedEventError: the provider is unknown, the body unreadable, or its event id
            cannot make a valid job id.
    """
    try:
        provider = get(name)
    except UnknownProviderError as err:
        raise MalformedEventError(name, "", str(err)) from None
    event = provider.parse(body, headers or {})
    if why := job_id_problem(event.job_id):
        raise MalformedEventError(name, event.event_id, f"its id cannot be a job id: {why}")
    return event


def event_types(kind: EventKind) -> set[str]:
    """Every provider's event types that mean one kind.

    Args:
        kind: what the events mean for an order.

    Returns:
        The event types, of every registered provider, mapped to `kind`.
    """
    return {t for p in _REGISTRY.values() for t, k in p.kinds.items() if k is kind}
