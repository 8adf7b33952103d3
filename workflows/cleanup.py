"""QueueCleanupWorkflow: hourly, removes failed bridge jobs older than 7 days (seed)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.cleanup import CleanupActivities
    from orderflow.contracts.cleanup import QueueCleanupInput, QueueCleanupResult


@workflow.defn
class QueueCleanupWorkflow:
    """Runs the clean once; the next scheduled run retries whatever this one missed."""

    @workflow.run
    async def run(self, data: QueueCleanupInput) -> QueueCleanupResult:
        """Clean every queue."""
        return await workflow.execute_activity_method(
            CleanupActivities.clean_queues,
            data,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
