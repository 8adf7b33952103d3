"""The ops dashboard in headless Chromium: approve a review and re-drive a DLQ job by clicking;
the charts and the Temporal task queues show a run the test drove."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from bullmq import UnrecoverableError
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from playwright.async_api import Error as PlaywrightError
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.client import OrderClient
from app.task_queues import describe_task_queue
from app.web.app import create_app
from app.web.dashboard import form_token
from bridge.admin import MINUTE_MS, QueueAdmin
from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.runtime import BridgeWorker
from bridge.specs import QueueSpec
from orderflow.contracts.order import ORDERS_TASK_QUEUE, OrderStatus, PaymentReceived
from orderflow.contracts.payment import PAYMENTS_TASK_QUEUE, GatewayName
from orderflow.db import Order
from orderflow.settings import Settings
from tests.bridge_helpers import eventually, running
from tests.helpers import pending_order, served_ops, wait_review, wait_status
from workers.queues import email_spec
from workflows.order import OrderWorkflow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def _sent(job: Job) -> str:
    return "sent"


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
Catalogue = Callable[..., dict[str, str]]


@pytest.fixture
async def dashboard(
    settings: Settings, orders: OrderClient, engine: Engine, redis_url: str
) -> AsyncIterator[tuple[str, Settings, QueueSpec]]:
    """The real HTTP app under uvicorn on a free port, watching a queue of this test's own."""
    async with served_ops(settings, redis_url, orders, engine, "ops") as served:
        yield served


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def test_dashboard_needs_the_admin_credential(
    dashboard: tuple[str, Settings, QueueSpec], browser: Browser
) -> None:
    base, settings, _ = dashboard
    async with httpx.AsyncClient(base_url=base) as http:
        anonymous = await http.get("/ops")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        wrong = await http.get("/ops", auth=(settings.admin_user, "not-the-password"))
        assert wrong.status_code == 401
        action = await http.post("/ops/reviews/r-1/decide", data={"approve": "true", "token": "x"})
        assert action.status_code == 401
        auth = (settings.admin_user, settings.admin_password)
        forged = await http.post(
            "/ops/reviews/r-1/decide", data={"approve": "true", "token": "forged"}, auth=auth
        )
        assert forged.status_code == 403  # right credential, but not a form this app served
    context = await browser.new_context()
    # a browser without the credential gets the challenge and no page
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
        await (await context.new_page()).goto(base + "/ops")
    assert (await context.request.get(base + "/ops")).status == 401
    await context.close()


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({}, "gateway: simulated (simulated: no money moves)"),
        ({"gateway": GatewayName.STRIPE, "stripe_api_key": "sk_test_51Pq8xYzStaging"}, "gateway: stripe (test mode: no real money)"),
        ({"gateway": GatewayName.RAZORPAY, "razorpay_key_id": "rzp_live_9d8c7b6a5f"}, "gateway: razorpay (live)"),
    ],
)  # fmt: skip
async def test_the_dashboard_shows_whether_the_gateway_is_live_test_or_simulated(
    settings: Settings,
    redis_url: str,
    orders: OrderClient,
    engine: Engine,
    changes: dict[str, Any],
    shown: str,
) -> None:
    configured = settings.model_copy(update=changes)
    async with served_ops(configured, redis_url, orders, engine, "mode") as (base, local, _):
        async with httpx.AsyncClient(base_url=base) as http:
            page = await http.get("/ops", auth=(local.admin_user, local.admin_password))
    assert page.status_code == 200
    [line] = re.findall(r'<span id="gateway-mode">(.*?)</span>', page.text)
    assert line == shown
    for value in changes.values():
        if not isinstance(value, GatewayName):
            assert value not in page.text  # the mode, never the key


async def test_approve_a_review_and_redrive_a_dlq_job_by_clicking(
    dashboard: tuple[str, Settings, QueueSpec],
    browser: Browser,
    orders: OrderClient,
    catalogue: Catalogue,
    redis_url: str,
) -> None:
    base, settings, spec = dashboard
    # a high-value paid order waits for an admin
    skus = catalogue(tv=(6_000_000, 3))
    order_id = (await pending_order(orders, [(skus["tv"], 1)], customer_id="cust-ops")).id
    ack = await orders.payment_received(
        order_id,
        PaymentReceived(
            payment_id=f"pay-{order_id}", amount=6_000_000, provider="stripe", currency="INR"
        ),
    )
    assert ack.accepted
    review = await wait_review(orders, order_id)
    # a job that failed for good sits in the DLQ
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", {"to": "gone@example.com"}, {"jobId": "dead-1"})
    admin = QueueAdmin(spec, redis_url)

    async def reject(job: Job) -> None:
        raise UnrecoverableError("mailbox gone@example.com does not exist")

    async with running(spec, reject, redis_url):
        await eventually(lambda: _dlq_size(admin, 1))

    context, page = await _signed_in_ops(browser, settings, base, "dashboard-before.png")
    row = page.locator(f'#queues tr[data-queue="{spec.name}"]')
    assert await row.locator("td.dlq").inner_text() == "1"
    link = page.locator(f'#orders tr[data-order="{order_id}"] a')
    assert await link.get_attribute("href") == (
        f"http://localhost:8233/namespaces/default/workflows/order-{order_id}"
    )
    await page.reload()  # reading the page twice changes nothing
    assert (await admin.counts()).dlq == 1

    await page.locator(f'#reviews tr[data-review="{review.review_id}"] button.approve').click()
    await page.wait_for_selector("#flash")
    assert f"review {review.review_id} approved by {settings.admin_user}" in (
        await page.locator("#flash").inner_text()
    )
    state = await wait_status(orders, order_id, "CONFIRMED")
    assert state.review_id == review.review_id
    assert all(r.review_id != review.review_id for r in await orders.pending_reviews())

    async def review_row_gone() -> bool:
        # the approval reaches the database through the workflow, a moment after the click
        await page.reload()
        return await page.locator(f'#reviews tr[data-review="{review.review_id}"]').count() == 0

    await eventually(review_row_gone, what="approved review off the page")

    await page.locator(f'table.dlq[data-queue="{spec.name}"] tr[data-job="dead-1"] button').click()
    await page.wait_for_selector("#flash")
    assert "job dead-1 re-driven" in await page.locator("#flash").inner_text()
    await page.screenshot(path=str(ARTIFACTS / "dashboard-after.png"), full_page=True)
    counts = await admin.counts()
    assert (counts.dlq, counts.failed, counts.waiting) == (0, 0, 1)
    info = await admin.job("dead-1", with_logs=False)
    assert info.state == "waiting" and info.attempts_made == 0
    await context.close()
    await admin.close()
    await producer.close()


async def _signed_in_ops(
    browser: Browser, settings: Settings, base: str, screenshot: str
) -> tuple[BrowserContext, Page]:
    """/ops opened by the admin (200), with a full-page screenshot in test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(
        http_credentials={"username": settings.admin_user, "password": settings.admin_password},
        viewport={"width": 1400, "height": 1000},
    )
    page = await context.new_page()
    response = await page.goto(base + "/ops")
    assert response is not None and response.status == 200
    await page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    return context, page


async def _dlq_size(admin: QueueAdmin, n: int) -> bool:
    return (await admin.counts()).dlq == n


def _replica(settings: Settings, env: WorkflowEnvironment, engine: Engine, spec: QueueSpec) -> Any:
    """One dashboard process's app: its own router, its own (never shared) memory."""
    producer = QueueProducer.connect(spec, settings.redis_url)
    orders = OrderClient(env.client, settings, engine)
    return create_app(settings, producer, orders=orders, engine=engine, queues={spec.name: spec})


async def test_form_token_from_another_replica_is_accepted_and_a_forged_one_refused(
    settings: Settings, env: WorkflowEnvironment, engine: Engine
) -> None:
    tag = uuid.uuid4().hex[:8]
    spec = email_spec(settings).with_(prefix=f"t{tag}", name=f"csrf-{tag}", rate_limit=None)
    auth = (settings.admin_user, settings.admin_password)
    first, second = (_replica(settings, env, engine, spec) for _ in range(2))

    def client(app: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app)
        return httpx.AsyncClient(transport=transport, base_url="http://ops", auth=auth)

    async with client(first) as a, client(second) as b:
        page = await a.get("/ops")
        assert page.status_code == 200
        token = re.search(r'<meta name="form-token" content="([^"]+)">', page.text)
        assert token is not None
        retry = f"/ops/queues/{spec.name}/jobs/missing-1/retry"
        # the other replica (or this one after a restart) accepts the form, and acts on it
        accepted = await b.post(retry, data={"token": token[1]})
        assert accepted.status_code == 303
        assert "missing-1" in accepted.headers["location"]
        assert "error=" in accepted.headers["location"]  # acted: the job does not exist
        issued = int(token[1].split(".")[0])
        other_secret = form_token("not-the-secret", settings.admin_user, issued)
        other_user = form_token(settings.dashboard_secret, "mallory", issued)
        expired = form_token(settings.dashboard_secret, settings.admin_user, issued - 13 * 3600)
        for forged in ("forged", "", other_secret, other_user, expired, token[1] + "0", "١.x"):
            refused = await b.post(retry, data={"token": forged})
            assert refused.status_code in (403, 422), forged
            assert refused.status_code == 403 or forged == ""


@pytest.fixture
async def charted(
    settings: Settings, orders: OrderClient, engine: Engine, redis_url: str
) -> AsyncIterator[tuple[str, Settings, QueueSpec, list[str]]]:
    """The app over a queue and two task queues of this test's own (orders-…, payments-…)."""
    tag = uuid.uuid4().hex[:8]
    task_queues = [f"{ORDERS_TASK_QUEUE}-{tag}", f"{PAYMENTS_TASK_QUEUE}-{tag}"]
    async with served_ops(settings, redis_url, orders, engine, "charts", task_queues) as served:
        yield (*served, task_queues)


async def test_charts_show_the_jobs_of_the_current_minute_and_the_task_queues_their_pollers(
    charted: tuple[str, Settings, QueueSpec, list[str]],
    browser: Browser,
    env: WorkflowEnvironment,
    engine: Engine,
    redis_url: str,
) -> None:
    base, settings, spec, (orders_queue, payments_queue) = charted
    # a run: 50 jobs complete and 5 fail for good, now
    producer = QueueProducer.connect(spec, redis_url)
    for i in range(50):
        await producer.add("send-welcome", {"to": f"ok{i}@example.com"}, {"jobId": f"ok-{i}"})
    for i in range(5):
        await producer.add("send-welcome", {"to": f"bad{i}@example.com"}, {"jobId": f"bad-{i}"})
    admin = QueueAdmin(spec, redis_url)

    async def send(job: Job) -> str:
        if job.id.startswith("bad"):
            raise UnrecoverableError(f"mailbox {job.data['to']} does not exist")
        await asyncio.sleep(0.02)  # the job's own work: the percentiles have something to show
        return "sent"

    async def ran() -> bool:
        c = await admin.counts()
        return (c.completed, c.failed) == (50, 5)

    async with running(spec, send, redis_url):
        await eventually(ran)
    await producer.close()
    await admin.close()
    # three orders of today, placed this hour
    zone = ZoneInfo(settings.report_timezone)
    placed = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    with Session(engine) as session:
        for i in range(3):
            session.add(
                Order(id=f"chart-{tag}-{i}", customer_id="cust-chart", email="c@example.com",
                      status=OrderStatus.CONFIRMED, total=100, currency="INR", created_at=placed)
            )  # fmt: skip
        session.commit()
    # two workflows wait on a task queue nobody polls; a worker polls the other one
    for i in range(2):
        await env.client.start_workflow(
            "PaymentRetryWorkflow", id=f"chart-{tag}-{i}", task_queue=payments_queue
        )
    worker = Worker(
        env.client, task_queue=orders_queue, workflows=[OrderWorkflow], identity=f"chart-{tag}"
    )
    async with worker:

        async def temporal_settled() -> bool:
            waiting = await describe_task_queue(env.client, payments_queue, "workflow")
            polled = await describe_task_queue(env.client, orders_queue, "workflow")
            return waiting.backlog == 2 and polled.pollers == 1

        await eventually(temporal_settled, what="backlog 2 and one poller")

        context, page = await _signed_in_ops(browser, settings, base, "dashboard-charts.png")

    assert await page.locator("script").count() == 0  # drawn on the server, nothing to run
    # jobs per minute: 50 completed and 5 failed, in this minute (or the one before, if the run
    # straddled a minute), each bar titled with its count
    chart = page.locator(f'[id="throughput-{spec.name}"] > svg')
    assert await chart.get_attribute("data-completed-total") == "50"
    assert await chart.get_attribute("data-failed-total") == "5"
    bars = chart.locator("rect")
    assert await bars.count() == 2 * 60
    shown: dict[str, dict[str, int]] = {"completed": {}, "failed": {}}
    for i in range(await bars.count()):
        bar = bars.nth(i)
        kind, minute = await bar.get_attribute("class"), await bar.get_attribute("data-minute")
        count = int(await bar.get_attribute("data-count") or "")
        assert await bar.locator("title").text_content() == f"{minute}: {count} {kind}"
        if count:
            shown[str(kind)][str(minute)] = count
    last_two = [await bars.nth(i).get_attribute("data-minute") for i in (-4, -1)]
    assert set(shown["completed"]) | set(shown["failed"]) <= set(last_two)
    assert sum(shown["completed"].values()) == 50 and sum(shown["failed"].values()) == 5
    # processing-time percentiles of those 50 jobs (each worked 20 ms)
    timed = page.locator(f'[id="processing-{spec.name}"]')
    assert await timed.locator("> svg").get_attribute("data-jobs") == "50"
    p50 = int(await timed.locator('rect[data-percentile="p50"]').get_attribute("data-count") or "")
    p99 = int(await timed.locator('rect[data-percentile="p99"]').get_attribute("data-count") or "")
    assert 20 <= p50 <= p99
    # depth over time: the worker sampled the queue as it started on the run
    history = page.locator(f'[id="depth-history-{spec.name}"] > svg')
    assert int(await history.get_attribute("data-samples") or "") >= 1
    assert await history.locator("circle.depth-dot").count() >= 1
    # queue depth: the failed jobs, and the Temporal backlog beside them
    depth = page.locator("#depth")
    failed = depth.locator(f'rect[data-queue="{spec.name}"][data-state="failed"]')
    assert await failed.get_attribute("data-count") == "5"
    backlog = depth.locator(f'rect[data-queue="{payments_queue}"][data-type="workflow"]')
    assert await backlog.get_attribute("data-count") == "2"
    # the task-queue table: the backlog, and the started worker as the poller
    waiting = page.locator(
        f'#task-queues tr[data-task-queue="{payments_queue}"][data-type="workflow"]'
    )
    assert (
        await waiting.locator("td.backlog").inner_text(),
        await waiting.locator("td.pollers").inner_text(),
    ) == ("2", "0")
    polled = page.locator(
        f'#task-queues tr[data-task-queue="{orders_queue}"][data-type="workflow"]'
    )
    assert await polled.locator("td.pollers").inner_text() == "1"
    assert f"chart-{tag}" in await polled.inner_text()
    # orders by status over the day: the three orders in their hour, as CONFIRMED
    hour = placed.astimezone(zone).strftime("%H")
    confirmed = page.locator(f'#orders-today rect[data-hour="{hour}"][data-status="CONFIRMED"]')
    assert int(await confirmed.get_attribute("data-count") or "") >= 3
    assert int(await page.locator("#orders-today > svg").get_attribute("data-total") or "") >= 3
    await context.close()


async def test_the_depth_chart_shows_the_samples_the_workers_recorded(
    dashboard: tuple[str, Settings, QueueSpec], redis_url: str
) -> None:
    base, settings, spec = dashboard
    zone = ZoneInfo(settings.report_timezone)
    producer = QueueProducer.connect(spec, redis_url)
    worker = BridgeWorker(spec, _sent, redis_url)  # not run: its sampler is called directly
    now = int(time.time() * 1000)
    try:
        for i in range(4):
            await producer.add("send-welcome", {"to": f"q{i}@example.com"})
        await worker.sample_depth(now - 3 * MINUTE_MS)  # three minutes ago: 4 waiting
        for i in range(2):
            await producer.add("send-welcome", {"to": f"l{i}@example.com"}, {"delay": 600_000})
        await worker.sample_depth(now)  # now: 4 waiting, 2 delayed
    finally:
        await producer.close()
        await worker.client.close()
    async with httpx.AsyncClient(base_url=base) as http:
        page = await http.get("/ops", auth=(settings.admin_user, settings.admin_password))
    assert page.status_code == 200
    [figure] = re.findall(
        rf'<figure class="chart" id="depth-history-{re.escape(spec.name)}">(.*?)</figure>',
        page.text,
        re.S,
    )
    assert 'data-samples="2"' in figure and 'data-latest="6"' in figure
    dots = re.findall(
        r'<circle class="depth-dot"[^>]* data-minute="([^"]+)" data-depth="(\d+)"'
        r' data-waiting="(\d+)" data-delayed="(\d+)"[^>]*><title>([^<]*)</title>',
        figure,
    )

    def clock(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).strftime("%H:%M")

    earlier, latest = clock(now - 3 * MINUTE_MS), clock(now)
    assert [d[:4] for d in dots] == [(earlier, "4", "4", "0"), (latest, "6", "4", "2")]
    assert dots[1][4] == f"{latest}: depth 6 (waiting 4, delayed 2, prioritized 0, active 0)"
    # two minutes without a sample between them: two runs, each a line over an area
    assert figure.count('<path class="depth-line"') == 2
    assert figure.count('<path class="depth-area"') == 2
    # the depth-now bars (bridge and Temporal queues) stay beside it
    assert re.search(
        rf'id="depth".*data-queue="{re.escape(spec.name)}" data-state="waiting"', page.text, re.S
    )


async def test_ops_reads_the_database_while_a_worker_holds_the_write_lock(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine
) -> None:
    """On SQLite a worker's write transaction holds the write lock; /ops only reads, so its
    database part is shown, not reported as an outage."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL readers never wait for the write lock")
    async with served_ops(settings, redis_url, orders, engine, "busy") as (base, local, _):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            with engine.connect() as writer, writer.begin():  # BEGIN IMMEDIATE, held
                page = await http.get("/ops", auth=(local.admin_user, local.admin_password))
    assert page.status_code == 200
    assert 'data-backend="database"' not in page.text, "the busy database was shown as down"
