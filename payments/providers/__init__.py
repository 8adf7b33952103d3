"""Payment providers as plug-ins: one module per gateway declares everything the system needs
of it, and one registry keyed by the provider's name serves the rest of the system.

A provider module builds a `WebhookProvider` (how its signature is checked and made, how its
events are read and what each event type means, where its payloads carry the order id, sample
bodies; its gateway factory, key patterns and settings row) and `register`s it. The ingress
routes (`POST /webhooks/<name>`), the webhook worker's job names, signing for tests and
`orderflow webhooks sign`, sample events, metrics labels, reconciliation's event kinds,
`make_gateway` and key redaction all come from here; nothing else names a provider. Adding
one: docs/EXTENDING.md.
"""

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from orderflow.settings import Settings
from payments.providers.base import (
    Headers,
    NoGatewayError,
    UnknownProviderError,
    WebhookProvider,
    all_providers,
    build_gateway,
    by_job_name,
    event_types,
    get,
    key_pattern,
    names,
    parse_event,
    register,
    unregister,
)

__all__ = [
    "Headers",
    "NoGatewayError",
    "UnknownProviderError",
    "WebhookProvider",
    "all_providers",
    "build_gateway",
    "by_job_name",
    "curl_command",
    "event_types",
    "get",
    "key_pattern",
    "names",
    "parse_event",
    "register",
    "sample_event",
    "signed_headers",
    "unregister",
]

# --- the registry: one line per provider module ---
from payments.providers import razorpay, stripe  # noqa: F401  (each registers itself)

# --- what every provider offers, by name: signed requests and sample bodies ---


def signed_headers(
    provider: str,
    payload: bytes | str,
    settings: Settings,
    *,
    timestamp: int | None = None,
    event_id: str | None = None,
) -> dict[str, str]:
    """The headers a gateway would send with this body, signed with the configured secret.

    For the CLI (`orderflow webhooks sign`), curl examples, tests and benchmarks. Any provider
    in the registry.
    """
    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    return get(provider).sign(body, settings, timestamp, event_id)


def curl_command(
    provider: str,
    body_file: str | Path,
    settings: Settings,
    *,
    url: str = "",
    timestamp: int | None = None,
    event_id: str | None = None,
) -> str:
    """A curl command that posts `body_file` to the app, signed now (Stripe allows 300 s)."""
    payload = Path(body_file).read_bytes()
    url = url or f"http://{settings.http_host}:{settings.http_port}/webhooks/{provider}"
    headers = signed_headers(provider, payload, settings, timestamp=timestamp, event_id=event_id)
    parts = ["curl", "-sS", "-X", "POST", shlex.quote(url)]
    for name, value in headers.items():
        parts += ["-H", shlex.quote(f"{name}: {value}")]
    parts += ["--data-binary", shlex.quote(f"@{body_file}")]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    """`python -m payments.providers PROVIDER BODY_FILE [URL]`: print a signed curl command."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[0] not in names():
        known = "|".join(names())
        raise SystemExit(f"usage: python -m payments.providers {known} BODY_FILE [URL]")
    print(
        curl_command(args[0], args[1], Settings.from_env(), url=args[2] if len(args) == 3 else "")
    )


def sample_event(
    provider: str, order_id: str, amount_minor: int, currency: str = "INR", *, outcome: str = "paid"
) -> bytes:
    """A sample body for the CLI and README: `outcome` paid or failed, in the currency's minor units.

    Any provider in the registry.
    """
    make = get(provider).samples.get(outcome)
    if make is None:
        raise ValueError(f"no sample for provider {provider!r} and outcome {outcome!r}")
    return _with_currency(make(order_id, amount_minor), currency)


def _with_currency(body: bytes, currency: str) -> bytes:
    """The sample with its object's currency set (Stripe writes it lower case, Razorpay upper)."""
    event = json.loads(body)
    for obj in _objects(event):
        if "currency" in obj:
            obj["currency"] = currency.lower() if obj["currency"].islower() else currency.upper()
    return json.dumps(event, separators=(",", ":")).encode()


def _objects(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value, *(o for v in value.values() for o in _objects(v))]
    if isinstance(value, list):
        return [o for v in value for o in _objects(v)]
    return []
