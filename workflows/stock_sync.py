"""StockSyncWorkflow: hourly, on-hand stock aligned with the ERP's physical counts."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.stock_sync import StockSyncActivities
    from orderflow.contracts.stock_sync import StockSyncResult


@workflow.defn
class StockSyncWorkflow:
    """Aligns on-hand stock with the ERP's physical counts (Schedule: every hour)."""

    @workflow.run
    async def run(self) -> StockSyncResult:
        """Run the sync once."""
        return await workflow.execute_activity_method(
            StockSyncActivities.sync_stock, start_to_close_timeout=timedelta(minutes=5)
        )
