"""InventoryReleaseWorkflow and the hourly StockSyncWorkflow."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.inventory import InventoryActivities
    from orderflow.contracts.inventory import ReleaseInput, ReleaseResult, StockSyncResult


@workflow.defn
class InventoryReleaseWorkflow:
    """Releases an order's reservation; its id is per order, and the activity skips released rows."""

    @workflow.run
    async def run(self, data: ReleaseInput) -> ReleaseResult:
        """Release what the order still holds."""
        return await workflow.execute_activity_method(
            InventoryActivities.release_reservation,
            data,
            start_to_close_timeout=timedelta(seconds=30),
        )


@workflow.defn
class StockSyncWorkflow:
    """Aligns on-hand stock with the ERP's physical counts (Schedule: every hour)."""

    @workflow.run
    async def run(self) -> StockSyncResult:
        """Run the sync once."""
        return await workflow.execute_activity_method(
            InventoryActivities.sync_stock, start_to_close_timeout=timedelta(minutes=5)
        )
