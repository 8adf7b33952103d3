"""The ops dashboard in headless Chromium: approve a review and re-drive a DLQ job by clicking."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from bullmq import UnrecoverableError
from playwright.async_api import Browser, async_playwright
from playwright.async_api import Error as PlaywrightError
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from app.web.app import create_app
from app.web.dashboard import form_token
from bridge.admin import QueueAdmin
from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.specs import QueueSpec, email_spec
from orderflow.contracts.order import PaymentReceived
from orderflow.settings import Settings
from tests.bridge_helpers import eventually, running
from tests.helpers import pending_order, served_ops, wait_review, wait_status

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
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
        order_id, PaymentReceived(payment_id=f"pay-{order_id}", amount=6_000_000, provider="stripe")
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

    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(
        http_credentials={"username": settings.admin_user, "password": settings.admin_password},
        viewport={"width": 1400, "height": 1000},
    )
    page = await context.new_page()
    response = await page.goto(base + "/ops")
    assert response is not None and response.status == 200
    await page.screenshot(path=str(ARTIFACTS / "dashboard-before.png"), full_page=True)
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
