"""Payment reconciliation: the daily comparison of payments with orders (seed job on the webhook queue)."""

from __future__ import annotations

from dataclasses import dataclass

PAYMENT_RECONCILIATION_SCHEDULE_ID = "payment-reconciliation"


@dataclass
class ReconciliationRequest:
    """Ask the webhook worker to compare the last `window_hours` of payments with the orders."""

    window_hours: float = 24.0
    stale_minutes: float = 30.0  # an event not applied this long after it arrived is reported
