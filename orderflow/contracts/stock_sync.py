"""Stock sync: on-hand stock aligned with the ERP's physical counts (Schedule: every hour)."""

from __future__ import annotations

from dataclasses import dataclass

from orderflow.contracts.inventory import INVENTORY_TASK_QUEUE

STOCK_SYNC_TASK_QUEUE = INVENTORY_TASK_QUEUE  # the inventory worker runs it beside the releases
STOCK_SYNC_SCHEDULE_ID = "stock-sync"
STOCK_SYNC_WORKFLOW_ID = "stock-sync"


@dataclass
class StockSyncResult:
    """What the hourly stock sync changed."""

    skus_checked: int
    skus_changed: int
