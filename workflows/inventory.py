"""InventoryReleaseWorkflow: an order's reservation released exactly once."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.inventory import InventoryActivities
    from orderflow.contracts.inventory import ReleaseInput, ReleaseResult


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
