"""Temporal Schedules for the seed's cron jobs, created idempotently (an existing one is updated)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from orderflow.contracts.cleanup import QUEUE_CLEANUP_SCHEDULE_ID, QueueCleanupInput
from orderflow.contracts.order import ORDERS_TASK_QUEUE
from orderflow.contracts.reconciliation import (
    PAYMENT_RECONCILIATION_SCHEDULE_ID,
    ReconciliationRequest,
)
from orderflow.contracts.reports import DAILY_REPORT_SCHEDULE_ID, DailyReportInput
from orderflow.contracts.stock_sync import (
    STOCK_SYNC_SCHEDULE_ID,
    STOCK_SYNC_TASK_QUEUE,
    STOCK_SYNC_WORKFLOW_ID,
)
from orderflow.settings import Settings
from workflows.cleanup import QueueCleanupWorkflow
from workflows.reconciliation import PaymentReconciliationWorkflow
from workflows.reports import DailyReportWorkflow
from workflows.stock_sync import StockSyncWorkflow


def schedules(settings: Settings) -> dict[str, Schedule]:
    """The daily report (cron, in the configured time zone) and the hourly stock sync."""
    return {
        DAILY_REPORT_SCHEDULE_ID: Schedule(
            action=ScheduleActionStartWorkflow(
                DailyReportWorkflow.run,
                DailyReportInput(timezone=settings.report_timezone),
                id="daily-report",
                task_queue=ORDERS_TASK_QUEUE,
            ),
            spec=ScheduleSpec(
                cron_expressions=[settings.report_cron], time_zone_name=settings.report_timezone
            ),
        ),
        STOCK_SYNC_SCHEDULE_ID: Schedule(
            action=ScheduleActionStartWorkflow(
                StockSyncWorkflow.run, id=STOCK_SYNC_WORKFLOW_ID, task_queue=STOCK_SYNC_TASK_QUEUE
            ),
            spec=ScheduleSpec(
                intervals=[
                    ScheduleIntervalSpec(every=timedelta(seconds=settings.stock_sync_every_seconds))
                ]
            ),
        ),
    }


async def ensure_schedules(client: Client, settings: Settings) -> list[str]:
    """Create the schedules, or bring existing ones up to the current settings."""
    return await _ensure(client, schedules(settings))


def maintenance_schedules(settings: Settings) -> dict[str, Schedule]:
    """The bridge queues' cleanup (failed jobs older than 7 days, hourly) and the daily payment
    reconciliation job.

    A Schedule rather than a timer in each bridge worker: it runs once however many bridge
    workers there are, and it can be seen, paused and triggered in the Temporal UI.
    """
    return {
        QUEUE_CLEANUP_SCHEDULE_ID: Schedule(
            action=ScheduleActionStartWorkflow(
                QueueCleanupWorkflow.run,
                QueueCleanupInput(older_than_seconds=settings.failed_job_retention_days * 86400),
                id="queue-cleanup",
                task_queue=ORDERS_TASK_QUEUE,
            ),
            spec=ScheduleSpec(
                intervals=[
                    ScheduleIntervalSpec(
                        every=timedelta(seconds=settings.queue_cleanup_every_seconds)
                    )
                ]
            ),
        ),
        PAYMENT_RECONCILIATION_SCHEDULE_ID: Schedule(
            action=ScheduleActionStartWorkflow(
                PaymentReconciliationWorkflow.run,
                ReconciliationRequest(window_hours=24.0),
                id="payment-reconciliation",
                task_queue=ORDERS_TASK_QUEUE,
            ),
            spec=ScheduleSpec(
                cron_expressions=[settings.reconciliation_cron],
                time_zone_name=settings.report_timezone,
            ),
        ),
    }


async def ensure_maintenance_schedules(client: Client, settings: Settings) -> list[str]:
    """Create the maintenance schedules, or bring existing ones up to the current settings."""
    return await _ensure(client, maintenance_schedules(settings))


async def _ensure(client: Client, wanted: dict[str, Schedule]) -> list[str]:
    for schedule_id, schedule in wanted.items():
        try:
            await client.create_schedule(schedule_id, schedule)
        except ScheduleAlreadyRunningError:

            def replace(_: ScheduleUpdateInput, new: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=new)

            await client.get_schedule_handle(schedule_id).update(replace)
    return list(wanted)
