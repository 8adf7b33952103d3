"""The inventory domain: releasing an order's reservation, exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

INVENTORY_TASK_QUEUE = "inventory"


class ReservationStatus(StrEnum):
    """A reservation row moves RESERVED → RELEASED or SHIPPED, exactly once."""

    RESERVED = "RESERVED"
    RELEASED = "RELEASED"
    SHIPPED = "SHIPPED"


def inventory_release_workflow_id(order_id: str) -> str:
    """One release per order: a second start is rejected by the server."""
    return f"inventory-release-{order_id}"


@dataclass
class ReleaseInput:
    """Release everything an order still holds."""

    order_id: str
    reason: str


@dataclass
class ReleaseResult:
    """How many reservation lines this call released (0 when already released)."""

    order_id: str
    released_lines: int
    released_units: int


@dataclass
class ShipInput:
    """The reserved stock left the warehouse."""

    order_id: str
