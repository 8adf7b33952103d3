"""Schedules (daily report, stock sync) and the ERP: real figures, created idempotently."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from app.schedules import ensure_schedules
from orderflow.contracts.order import ORDERS_TASK_QUEUE, OrderState, PaymentReceived
from orderflow.contracts.reports import DAILY_REPORT_SCHEDULE_ID, DailyReportInput
from orderflow.contracts.stock_sync import STOCK_SYNC_SCHEDULE_ID
from orderflow.db import DailyReport, Order, Product
from orderflow.settings import Settings
from tests.fake_erp import FakeErp
from tests.helpers import erp_received, eventually, new_order_id, pending_order, stock
from workflows.reports import DailyReportWorkflow
from workflows.stock_sync import StockSyncWorkflow


async def test_schedules_are_created_idempotently_with_the_seed_timing(
    env: WorkflowEnvironment, settings: Settings, workers: object
) -> None:
    assert await ensure_schedules(env.client, settings) == [
        DAILY_REPORT_SCHEDULE_ID,
        STOCK_SYNC_SCHEDULE_ID,
    ]
    assert await ensure_schedules(env.client, settings) == [
        DAILY_REPORT_SCHEDULE_ID,
        STOCK_SYNC_SCHEDULE_ID,
    ]
    daily = await env.client.get_schedule_handle(DAILY_REPORT_SCHEDULE_ID).describe()
    assert daily.schedule.spec.time_zone_name == "Asia/Kolkata"
    calendar = daily.schedule.spec.calendars[0] if daily.schedule.spec.calendars else None
    if calendar is not None:  # the server stores a cron string as a calendar spec
        assert [r.start for r in calendar.hour] == [9] and [r.start for r in calendar.minute] == [0]
    else:
        assert daily.schedule.spec.cron_expressions == ["0 9 * * *"]
    assert isinstance(daily.schedule.action, ScheduleActionStartWorkflow)
    assert daily.schedule.action.workflow == "DailyReportWorkflow"
    sync = await env.client.get_schedule_handle(STOCK_SYNC_SCHEDULE_ID).describe()
    assert sync.schedule.spec.intervals[0].every.total_seconds() == 3600
    schedules = [s.id async for s in await env.client.list_schedules()]
    assert schedules.count(DAILY_REPORT_SCHEDULE_ID) == 1


async def test_daily_report_counts_orders_and_revenue_by_status_for_the_day(
    env: WorkflowEnvironment, engine: Engine, workers: object
) -> None:
    def at(utc: str) -> datetime:
        return datetime.fromisoformat(utc).replace(tzinfo=UTC)

    tag = uuid.uuid4().hex[:6]
    rows = [  # 2020-01-15 in Asia/Kolkata is 2020-01-14T18:30Z .. 2020-01-15T18:30Z
        ("CONFIRMED", 100_000, at("2020-01-14T18:30:00")),
        ("CONFIRMED", 50_000, at("2020-01-15T10:00:00")),
        ("SHIPPED", 25_000, at("2020-01-15T18:29:59")),
        ("CANCELLED", 70_000, at("2020-01-15T05:00:00")),
        ("CONFIRMED", 999_900, at("2020-01-15T18:30:00")),  # already the 16th in Kolkata
        ("CONFIRMED", 888_800, at("2020-01-14T18:29:59")),  # still the 14th in Kolkata
    ]
    with Session(engine) as session:
        for i, (status, total, created) in enumerate(rows):
            session.add(
                Order(
                    id=f"r-{tag}-{i}", customer_id="r", email="r@example.com", status=status,
                    total=total, currency="INR", created_at=created,
                )
            )  # fmt: skip
        session.commit()
    result = await env.client.execute_workflow(
        DailyReportWorkflow.run,
        DailyReportInput(timezone="Asia/Kolkata", day="2020-01-15"),
        id=f"report-{tag}",
        task_queue=ORDERS_TASK_QUEUE,
    )
    assert result.orders == 4
    assert (
        result.by_status["CONFIRMED"].orders == 2
        and result.by_status["CONFIRMED"].revenue == 150_000
    )
    assert (
        result.by_status["SHIPPED"].orders == 1 and result.by_status["CANCELLED"].revenue == 70_000
    )
    assert result.revenue == 175_000  # cancelled money is not revenue
    with Session(engine) as session:
        stored = session.get(DailyReport, "2020-01-15")
        assert stored is not None and '"revenue": 175000' in stored.figures


async def test_triggered_schedules_run_their_workflows(
    env: WorkflowEnvironment, settings: Settings, engine: Engine, workers: object
) -> None:
    await ensure_schedules(env.client, settings)
    before = await _count_runs(env, "StockSyncWorkflow")
    await env.client.get_schedule_handle(STOCK_SYNC_SCHEDULE_ID).trigger()

    async def ran() -> bool:
        return await _count_runs(env, "StockSyncWorkflow") > before

    await eventually(ran, 10, "a stock-sync run completed by the triggered schedule")


async def _count_runs(env: WorkflowEnvironment, workflow_type: str) -> int:
    query = f"WorkflowType='{workflow_type}' AND ExecutionStatus='Completed'"
    return (await env.client.count_workflows(query)).count


async def test_stock_sync_takes_physical_counts_from_the_erp(
    env: WorkflowEnvironment,
    orders: OrderClient,
    engine: Engine,
    erp: FakeErp,
    catalogue: Callable[..., dict[str, str]],
) -> None:
    skus = catalogue(rug=(300_000, 10), lamp=(80_000, 4))
    await pending_order(orders, [(skus["rug"], 3)])
    erp.stock = {skus["rug"]: 8, skus["lamp"]: 4}  # two rugs were damaged in the warehouse
    result = await env.client.execute_workflow(
        StockSyncWorkflow.run, id=f"sync-{uuid.uuid4().hex[:6]}", task_queue="inventory"
    )
    assert result.skus_changed >= 1
    assert stock(engine, skus["rug"]) == (5, 3)  # physical 8 = 5 sellable + 3 held for the order
    assert stock(engine, skus["lamp"]) == (4, 0)
    erp.stock = {}


async def test_erp_sync_is_retried_once_then_noted(
    orders: OrderClient, erp: FakeErp, catalogue: Callable[..., dict[str, str]]
) -> None:
    skus = catalogue(pot=(45_000, 5))
    flaky, down = new_order_id(), new_order_id()
    for order_id in (flaky, down):
        await pending_order(orders, [(skus["pot"], 1)], order_id=order_id)
    erp.fail_next = 1  # the seed's 2 attempts: one failure is absorbed
    await orders.payment_received(
        flaky, PaymentReceived(payment_id=f"pay-{flaky}", amount=45_000, currency="INR")
    )
    await erp_received(erp, flaky)
    erp.fail_next = 2  # both attempts fail: the order stands, the failure is in its history
    await orders.payment_received(
        down, PaymentReceived(payment_id=f"pay-{down}", amount=45_000, currency="INR")
    )

    async def noted() -> OrderState | None:
        state = await orders.status(down)
        failed = any("ERP sync failed after 2 attempts" in h.note for h in state.history)
        return state if failed else None

    state = await eventually(noted, 10, f"the failed ERP sync noted in order {down}'s history")
    assert state.status == "CONFIRMED" and down not in erp.orders
    assert any("ERP sync failed after 2 attempts" in h.note for h in state.history)
    with Session(orders.engine) as session:  # type: ignore[arg-type]
        product = session.get(Product, skus["pot"])
        assert product is not None and product.reserved == 2
