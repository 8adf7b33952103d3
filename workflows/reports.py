"""DailyReportWorkflow (Schedule: 09:00 every day)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.reports import ReportActivities
    from orderflow.contracts.reports import DailyReportInput, DailyReportResult


@workflow.defn
class DailyReportWorkflow:
    """Computes and stores one day's figures."""

    @workflow.run
    async def run(self, data: DailyReportInput) -> DailyReportResult:
        """Run the report activity."""
        return await workflow.execute_activity_method(
            ReportActivities.daily_report, data, start_to_close_timeout=timedelta(minutes=5)
        )
