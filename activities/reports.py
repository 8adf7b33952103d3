"""The daily report: orders and revenue by status for one day, from the database."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio import activity

from orderflow.contracts.order import REVENUE_STATUSES
from orderflow.contracts.reports import DailyReportInput, DailyReportResult, StatusFigures
from orderflow.db import DailyReport, Order


class ReportActivities:
    """Computes and stores reports."""

    def __init__(self, engine: Engine, currency: str = "INR") -> None:
        self.engine = engine
        self.currency = currency  # the shop's one currency: every order is priced in it

    @activity.defn
    def daily_report(self, data: DailyReportInput) -> DailyReportResult:
        """Count the day's orders and sum their totals by status; store the figures."""
        zone = ZoneInfo(data.timezone)
        day = data.day or (datetime.now(zone).date() - timedelta(days=1)).isoformat()
        start = datetime.combine(datetime.fromisoformat(day).date(), time.min, tzinfo=zone)
        end = start + timedelta(days=1)
        lo, hi = (t.astimezone(UTC) for t in (start, end))
        with Session(self.engine) as session:
            rows = session.exec(
                select(Order.status, func.count(), func.coalesce(func.sum(Order.total), 0))
                .where(col(Order.created_at) >= lo, col(Order.created_at) < hi)
                .group_by(Order.status)
            ).all()
            result = DailyReportResult(day=day, timezone=data.timezone, currency=self.currency)
            for status, count, revenue in rows:
                result.by_status[status] = StatusFigures(orders=int(count), revenue=int(revenue))
                result.orders += int(count)
                if status in REVENUE_STATUSES:
                    result.revenue += int(revenue)
            report = session.get(DailyReport, day) or DailyReport(
                day=day, timezone=data.timezone, figures=""
            )
            report.figures = json.dumps(asdict(result), sort_keys=True)
            session.add(report)
            session.commit()
        return result
