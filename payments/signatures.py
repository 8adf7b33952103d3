"""Webhook signatures as Stripe and Razorpay make them: sign, and verify in constant time."""

from __future__ import annotations

import hashlib
import hmac
import time

from orderflow.errors import OrderflowError

STRIPE_SIGNATURE_HEADER = "Stripe-Signature"
RAZORPAY_SIGNATURE_HEADER = "X-Razorpay-Signature"
RAZORPAY_EVENT_ID_HEADER = "X-Razorpay-Event-Id"
STRIPE_SCHEME = "v1"  # the only scheme Stripe signs live events with; v0 is test-only and ignored
DEFAULT_TOLERANCE_SECONDS = 300  # Stripe's own default window against replays


class SignatureError(OrderflowError):
    """A webhook's signature is missing, malformed, wrong or stale."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider} webhook signature rejected: {reason}")
        self.provider = provider
        self.reason = reason


def _as_bytes(payload: bytes | str) -> bytes:
    return payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def stripe_signature(payload: bytes | str, secret: str, timestamp: int) -> str:
    """The v1 signature: hex HMAC-SHA256 of `{timestamp}.{payload}` keyed by the endpoint secret."""
    return _hmac_hex(secret, f"{timestamp}.".encode() + _as_bytes(payload))


def sign_stripe(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value (`t=…,v1=…`) for the payload, signed now by default."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},{STRIPE_SCHEME}={stripe_signature(payload, secret, t)}"


def parse_stripe_header(header: str) -> tuple[int, list[str]]:
    """The timestamp and every v1 signature in a `Stripe-Signature` header."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("stripe", f"timestamp {value!r} is not an integer") from None
        elif key == STRIPE_SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("stripe", "no timestamp (t=) in the Stripe-Signature header")
    if not signatures:
        raise SignatureError("stripe", "no v1 signature in the Stripe-Signature header")
    return timestamp, signatures


def verify_stripe(
    payload: bytes | str,
    header: str | None,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a `Stripe-Signature` header against the raw body; returns its timestamp.

    Any one of several v1 signatures may match (Stripe sends one per secret while a secret rolls).
    A timestamp further than `tolerance` seconds from now, past or future, is refused as a replay.
    """
    if not tolerance > 0:  # 0 once meant "no check": a captured request could be replayed forever
        raise ValueError(f"the Stripe tolerance must be positive, not {tolerance!r}")
    if not header:
        raise SignatureError("stripe", "the Stripe-Signature header is missing")
    if not secret:
        raise SignatureError("stripe", "no Stripe webhook secret is configured")
    timestamp, signatures = parse_stripe_header(header)
    expected = stripe_signature(payload, secret, timestamp)
    # compare against all of them, so timing says nothing about which one matched
    matched = [hmac.compare_digest(expected.encode(), s.encode()) for s in signatures]
    if not any(matched):
        raise SignatureError("stripe", "no v1 signature matches the body and the endpoint secret")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise SignatureError(
            "stripe",
            f"timestamp {timestamp} is {age:.0f}s from now, outside the {tolerance:.0f}s tolerance",
        )
    return timestamp


def sign_razorpay(payload: bytes | str, secret: str) -> str:
    """An `X-Razorpay-Signature` header value: hex HMAC-SHA256 of the raw body."""
    return _hmac_hex(secret, _as_bytes(payload))


def verify_razorpay(payload: bytes | str, header: str | None, secret: str) -> None:
    """Check an `X-Razorpay-Signature` header against the raw body."""
    if not header:
        raise SignatureError("razorpay", "the X-Razorpay-Signature header is missing")
    if not secret:
        raise SignatureError("razorpay", "no Razorpay webhook secret is configured")
    if not hmac.compare_digest(sign_razorpay(payload, secret).encode(), header.strip().encode()):
        raise SignatureError(
            "razorpay", "the signature does not match the body and the webhook secret"
        )
