"""PaymentReconciliationWorkflow: daily, asks the webhook worker to reconcile payments with orders."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.reconciliation import ReconciliationActivities
    from orderflow.contracts.reconciliation import ReconciliationRequest


@workflow.defn
class PaymentReconciliationWorkflow:
    """Enqueues the seed's payment-reconciliation job; the webhook worker reports mismatches."""

    @workflow.run
    async def run(self, data: ReconciliationRequest) -> str:
        """Add the job; returns its id."""
        return await workflow.execute_activity_method(
            ReconciliationActivities.request_reconciliation,
            data,
            start_to_close_timeout=timedelta(minutes=1),
        )
