"""Reconciliation activity: add the seed's payment-reconciliation job to the webhook queue."""

from __future__ import annotations

from temporalio import activity

from bridge.producer import QueueProducer
from bridge.specs import QueueSpec
from orderflow.contracts.reconciliation import ReconciliationRequest
from payments.reconciliation import enqueue_reconciliation


class ReconciliationActivities:
    """Enqueues on the payment webhook queue it is given."""

    def __init__(self, webhook_spec: QueueSpec, redis_url: str) -> None:
        self.webhook_spec = webhook_spec
        self.redis_url = redis_url

    @activity.defn
    async def request_reconciliation(self, data: ReconciliationRequest) -> str:
        """Add a payment-reconciliation job; one per scheduled run (its id is the run's)."""
        info = activity.info()
        job_id = "reconciliation-" + (info.workflow_id or info.activity_id).replace(":", "-")
        producer = QueueProducer.connect(self.webhook_spec, self.redis_url)
        try:
            return await enqueue_reconciliation(
                producer,
                window_hours=data.window_hours,
                job_id=job_id,
                stale_minutes=data.stale_minutes,
            )
        finally:
            await producer.close()
