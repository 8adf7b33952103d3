"""What every provider's webhook signature shares: its error and the HMAC it is made of.

Each provider signs and verifies in its module (payments/providers/<name>.py), in constant time.
"""

from __future__ import annotations

import hashlib
import hmac

from orderflow.errors import OrderflowError


class SignatureError(OrderflowError):
    """A webhook's signature is missing, malformed, wrong or stale."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider} webhook signature rejected: {reason}")
        self.provider = provider
        self.reason = reason


def as_bytes(payload: bytes | str) -> bytes:
    """The payload as bytes (a str is UTF-8)."""
    return payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)


def hmac_hex(secret: str, message: bytes) -> str:
    """Hex HMAC-SHA256 of `message` keyed by `secret`."""
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
