"""What every provider's sample webhook bodies share (for the CLI, README, tests, benchmarks).

The bodies themselves are in each provider's module (payments/providers/<name>.py).
"""

from __future__ import annotations

import json
import uuid
from typing import Any


def new_id(prefix: str) -> str:
    """A fresh gateway-shaped id (`evt_…`)."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def dump_event(event: dict[str, Any]) -> bytes:
    """The event as compact JSON bytes, as a gateway posts it."""
    return json.dumps(event, separators=(",", ":")).encode()
