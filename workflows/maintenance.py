"""QueueCleanupWorkflow (hourly: failed bridge jobs older than 7 days) and the daily
PaymentReconciliationWorkflow (asks the webhook worker to reconcile payments with orders)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.maintenance import MaintenanceActivities
    from orderflow.contracts.maintenance import (
        QueueCleanupInput,
        QueueCleanupResult,
        ReconciliationRequest,
    )


@workflow.defn
class QueueCleanupWorkflow:
    """Runs the clean once; the next scheduled run retries whatever this one missed."""

    @workflow.run
    async def run(self, data: QueueCleanupInput) -> QueueCleanupResult:
        """Clean every queue."""
        return await workflow.execute_activity_method(
            MaintenanceActivities.clean_queues,
            data,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )


@workflow.defn
class PaymentReconciliationWorkflow:
    """Enqueues the seed's payment-reconciliation job; the webhook worker reports mismatches."""

    @workflow.run
    async def run(self, data: ReconciliationRequest) -> str:
        """Add the job; returns its id."""
        return await workflow.execute_activity_method(
            MaintenanceActivities.request_reconciliation,
            data,
            start_to_close_timeout=timedelta(minutes=1),
        )
