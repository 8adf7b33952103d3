"""Scheduled jobs: the daily report and the hourly stock sync (Temporal Schedules)."""

from __future__ import annotations

from dataclasses import dataclass, field

DAILY_REPORT_SCHEDULE_ID = "daily-report"


@dataclass
class DailyReportInput:
    """The day to report (YYYY-MM-DD in `timezone`); empty: the last full day (yesterday there)."""

    timezone: str
    day: str = ""


@dataclass
class StatusFigures:
    """Orders and revenue for one status."""

    orders: int
    revenue: int  # minor units of the report's currency


@dataclass
class DailyReportResult:
    """A day's orders and revenue by status."""

    day: str
    timezone: str
    by_status: dict[str, StatusFigures] = field(default_factory=dict)
    orders: int = 0
    revenue: int = 0  # minor units of `currency`
    currency: str = ""
