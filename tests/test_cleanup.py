"""Cleanup: each queue's removeOnComplete/removeOnFail policy, and the scheduled clean of old failures."""

from __future__ import annotations

import time
import uuid

from bullmq import UnrecoverableError
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.testing import WorkflowEnvironment

from app.schedules import ensure_maintenance_schedules
from bridge.admin import QueueAdmin
from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.specs import KEEP_COMPLETED
from orderflow.contracts.cleanup import QUEUE_CLEANUP_SCHEDULE_ID, QueueCleanupInput
from orderflow.contracts.order import ORDERS_TASK_QUEUE
from orderflow.contracts.payment import WEBHOOK_QUEUE
from orderflow.contracts.reconciliation import PAYMENT_RECONCILIATION_SCHEDULE_ID
from orderflow.settings import Settings
from tests.bridge_helpers import eventually, running
from workers.queues import email_spec, queue_specs
from workflows.cleanup import QueueCleanupWorkflow

DAY_MS = 86_400_000


async def test_producer_applies_each_queues_retention_policy(
    settings: Settings, redis_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    spec = email_spec(settings).with_(prefix=f"t{tag}", name=f"keep-{tag}", rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    admin = QueueAdmin(spec, redis_url)
    await producer.add("send-welcome", {"to": "a@example.com"}, {"jobId": "policy"})
    job = await admin.queue.getJob("policy")
    assert job.opts["removeOnComplete"] == KEEP_COMPLETED == {"age": 86400, "count": 1000}
    assert job.opts["removeOnFail"] is False  # failed jobs wait for an operator (and the clean)

    small = spec.with_(remove_on_complete={"count": 2})
    few = QueueProducer.connect(small, redis_url)
    for i in range(5):
        await few.add("send-welcome", {"to": f"u{i}@example.com"}, {"jobId": f"k-{i}"})

    async def done(job: Job) -> str:
        return "ok"

    async with running(small, done, redis_url):
        await eventually(lambda: _processed(admin, 6))
    counts = await admin.counts()
    assert counts.completed == 2 and counts.completed_recent == 2  # the worker trimmed the rest
    await few.close()
    await producer.close()
    await admin.close()


async def _processed(admin: QueueAdmin, n: int) -> bool:
    c = await admin.counts()
    return c.waiting == 0 and c.active == 0 and c.completed == 2


async def test_cleanup_schedule_removes_failed_jobs_older_than_seven_days(
    env: WorkflowEnvironment, settings: Settings, redis_url: str, workers: object
) -> None:
    expected = [QUEUE_CLEANUP_SCHEDULE_ID, PAYMENT_RECONCILIATION_SCHEDULE_ID]
    assert await ensure_maintenance_schedules(env.client, settings) == expected
    assert await ensure_maintenance_schedules(env.client, settings) == expected
    described = await env.client.get_schedule_handle(QUEUE_CLEANUP_SCHEDULE_ID).describe()
    assert described.schedule.spec.intervals[0].every.total_seconds() == 3600
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == "QueueCleanupWorkflow"

    spec = queue_specs(settings)[WEBHOOK_QUEUE]  # the real queue the schedule cleans
    producer = QueueProducer.connect(spec, redis_url)
    admin = QueueAdmin(spec, redis_url)
    tag = uuid.uuid4().hex[:8]
    old, fresh = f"reconcile-old-{tag}", f"reconcile-fresh-{tag}"
    for job_id in (old, fresh):
        await producer.add("payment-reconciliation", {"window_hours": 1}, {"jobId": job_id})

    async def fail(job: Job) -> None:
        raise UnrecoverableError(f"job {job.id}: test failure")

    async with running(spec, fail, redis_url):
        await eventually(lambda: _failed(admin, {old, fresh}))
    eight_days_ago = int(time.time() * 1000) - 8 * DAY_MS
    await admin.client.execute("HSET", admin.keys.job(old), "finishedOn", eight_days_ago)
    await admin.client.execute("ZADD", admin.keys["failed"], eight_days_ago, old)

    result = await env.client.execute_workflow(
        QueueCleanupWorkflow.run,
        QueueCleanupInput(older_than_seconds=settings.failed_job_retention_days * 86400),
        id=f"queue-cleanup-test-{tag}",
        task_queue=ORDERS_TASK_QUEUE,
    )
    assert old in result.removed[WEBHOOK_QUEUE] and fresh not in result.removed[WEBHOOK_QUEUE]
    assert await admin.queue.getJob(old) is None
    assert (await admin.job(fresh, with_logs=False)).state == "failed"
    assert {e.id for e in await admin.dead_letters()} >= {old, fresh}  # the DLQ keeps both
    await admin.dlq.purge(old)
    await admin.dlq.purge(fresh)
    await producer.close()
    await admin.close()


async def _failed(admin: QueueAdmin, ids: set[str]) -> bool:
    failed = {j.id for j in await admin.failed(100)}
    return ids <= failed


async def test_reconciliation_workflow_enqueues_one_job_per_run(
    env: WorkflowEnvironment, settings: Settings, workers: object
) -> None:
    from bullmq import Queue as BullQueue

    from orderflow.contracts.reconciliation import ReconciliationRequest
    from workflows.reconciliation import PaymentReconciliationWorkflow

    run_id = f"payment-reconciliation-{uuid.uuid4().hex[:8]}"
    job_id = await env.client.execute_workflow(
        PaymentReconciliationWorkflow.run,
        ReconciliationRequest(window_hours=12),
        id=run_id,
        task_queue="orders",
    )
    assert job_id == f"reconciliation-{run_id}"
    queue = BullQueue(
        WEBHOOK_QUEUE, {"connection": settings.redis_url, "prefix": settings.queue_prefix}
    )
    try:
        job = await queue.getJob(job_id)
        assert job is not None and job.name == "payment-reconciliation"
        assert job.data == {"window_hours": 12, "stale_minutes": 30.0}
    finally:
        await queue.close()
