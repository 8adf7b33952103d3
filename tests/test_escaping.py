"""XSS probes: customer and operator text renders escaped on the dashboard, invoices and mails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest
from bullmq import UnrecoverableError
from jinja2 import Environment, FileSystemLoader
from playwright.async_api import async_playwright
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from activities.erp import LocalErp
from activities.order import OrderActivities
from app.client import OrderClient
from app.task_queues import TaskQueueState
from app.web import charts
from app.web.dashboard import TEMPLATES
from bridge.admin import ProcessingTimes, QueueCounts, Throughput
from bridge.errors import MalformedJobError
from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.specs import QueueSpec
from mail.processor import EmailProcessor
from orderflow.contracts.order import ConfirmInput, OrderStatus, PaymentReceived
from orderflow.contracts.review import ReviewKind
from orderflow.db import Invoice, Order, OrderItem, Product, Review
from orderflow.settings import Settings
from orderflow.templating import is_html_template
from tests.bridge_helpers import counts, eventually, running
from tests.helpers import served_ops
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS
from workers.queues import email_spec

# Each probe sets window.pwned if a browser ever runs it.
SCRIPT = "<script>window.pwned='script'</script>"
IMG = "<img src=x onerror=\"window.pwned='img'\">"
RAW_MARKUP = ("<script", "<img")


def test_html_templates_are_recognised_beneath_the_engine_suffix() -> None:
    for name in ("dashboard.html.j2", "invoice.html.j2", "a.HTML", "feed.xml.jinja2", None):
        assert is_html_template(name), name
    for name in ("send-welcome.txt.j2", "_macros.j2", "report.csv"):
        assert not is_html_template(name), name


def test_invoice_escapes_product_names_customer_ids_and_payment_ids(engine: Engine) -> None:
    tag = uuid.uuid4().hex[:8]
    order_id, sku = f"x-{tag}", f"sku-{tag}"
    with Session(engine) as session:
        session.add(Product(sku=sku, name=SCRIPT, price=10.0, on_hand=5))
        session.add(
            Order(
                id=order_id,
                customer_id=IMG,
                email="a@example.com",
                status=OrderStatus.PAID,
                total=10.0,
                currency="INR",
            )
        )
        session.flush()
        session.add(OrderItem(order_id=order_id, sku=sku, quantity=1, unit_price=10.0))
        session.commit()
    activities = OrderActivities(engine, LocalErp(engine))
    payment = PaymentReceived(
        payment_id=f"pay-{tag}-{SCRIPT}", amount=10.0, provider="stripe", currency="INR"
    )
    number = activities.confirm_order(ConfirmInput(order_id=order_id, payment=payment))
    assert number.invoice_number == f"INV-{order_id}"
    with Session(engine) as session:
        invoice = session.get(Invoice, order_id)
    assert invoice is not None
    assert not any(raw in invoice.html for raw in RAW_MARKUP), invoice.html
    assert "&lt;script&gt;window.pwned=&#39;script&#39;&lt;/script&gt;" in invoice.html
    assert "&lt;img src=x onerror=&#34;window.pwned=&#39;img&#39;&#34;&gt;" in invoice.html


def test_mail_escapes_the_recipient_address_and_every_data_field(
    settings: Settings, engine: Engine
) -> None:
    spec = email_spec(settings)
    processor = EmailProcessor(settings, spec, engine)
    job = Job(
        id="order-confirmation-xss",
        name="send-order-confirmation",
        data={
            "to": f"{IMG}@example.com",
            "subject": f"Order {SCRIPT}",
            "data": {
                "orderNumber": SCRIPT,
                "items": [{"name": IMG, "quantity": 1, "unitPrice": 5}],
                "total": 5,
                "currency": "INR",  # a currency that is not a code is refused: test_mail_view
                "invoiceNumber": IMG,
                "note": SCRIPT,
            },
        },
        opts={},
        attempts_made=0,
        timestamp=0,
        token="t",
        queue=spec.name,
    )
    mail = processor.render(job)
    assert not any(raw in mail.html for raw in RAW_MARKUP), mail.html
    assert mail.html.count("&lt;script&gt;") >= 3 and "&lt;img src=x" in mail.html
    assert SCRIPT in mail.text  # the plain-text part is not HTML: it stays as written


@pytest.fixture
async def xss_dashboard(
    env: WorkflowEnvironment, settings: Settings, engine: Engine, redis_url: str
) -> AsyncIterator[tuple[str, Settings, QueueSpec]]:
    """The HTTP app under uvicorn, over a queue of its own; no workers needed to read the page."""
    orders = OrderClient(env.client, settings, engine)
    async with served_ops(settings, redis_url, orders, engine, "xss") as served:
        yield served


async def test_dashboard_escapes_query_string_return_reason_email_and_ids(
    xss_dashboard: tuple[str, Settings, QueueSpec], engine: Engine, redis_url: str
) -> None:
    base, settings, spec = xss_dashboard
    tag = uuid.uuid4().hex[:8]
    # stored probes: an order and customer id, a return reason, an e-mail inside a failure reason
    with Session(engine) as session:
        session.add(
            Order(
                id=f"o-{tag}{IMG}",
                customer_id=SCRIPT,
                email="c@example.com",
                status=OrderStatus.PENDING_PAYMENT,
                total=1.0,
                currency="INR",
            )
        )
        session.add(  # a status no code writes: the orders chart labels it as given, as text
            Order(
                id=f"o-{tag}-status",
                customer_id="c",
                email="c@example.com",
                status=SCRIPT,
                total=1,
                currency="INR",
            )
        )
        session.add(
            Review(
                id=f"review-{tag}{SCRIPT}",
                order_id=f"o-{tag}{IMG}",
                kind=ReviewKind.RETURN,
                reason=f"return reason: {SCRIPT}",
            )
        )
        session.commit()
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", {"to": f"{IMG}@example.com", "note": SCRIPT})

    async def refuse(job: Job) -> None:
        raise UnrecoverableError(f"mailbox {job.data['to']} does not exist")

    async with running(spec, refuse, redis_url):
        await eventually(lambda: _failed(spec, redis_url))
    await producer.close()

    auth = (settings.admin_user, settings.admin_password)
    async with httpx.AsyncClient(base_url=base, auth=auth) as http:
        page = await http.get("/ops", params={"msg": SCRIPT, "error": IMG})
    assert page.status_code == 200
    html = page.text
    assert not any(raw in html for raw in RAW_MARKUP), "raw markup on the page"
    assert "return reason: &lt;script&gt;" in html  # the probes are there, escaped
    assert "mailbox &lt;img src=x" in html and f"o-{tag}&lt;img" in html
    assert 'data-status="&lt;script&gt;window.pwned=&#39;script&#39;&lt;/script&gt;"' in html

    # and a real browser, signed in, runs none of them
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(
            http_credentials={"username": auth[0], "password": auth[1]}
        )
        tab = await context.new_page()
        dialogs: list[str] = []
        tab.on("dialog", lambda d: dialogs.append(d.message))
        for url in ("/ops?" + urlencode({"msg": SCRIPT}), "/ops?" + urlencode({"error": IMG})):
            response = await tab.goto(base + url)
            assert response is not None and response.status == 200
            await tab.wait_for_load_state("load")
            assert await tab.evaluate("window.pwned === undefined"), url
            assert await tab.locator("#flash").inner_text() in (SCRIPT, IMG)  # shown as text
        assert dialogs == []
        await browser.close()


async def _failed(spec: QueueSpec, redis_url: str) -> bool:
    return (await counts(spec, redis_url)).get("failed", 0) == 1


def test_charts_escape_queue_names_task_queue_names_and_statuses() -> None:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=is_html_template)
    page = env.from_string(
        '{% import "_charts.html.j2" as c %}{% for x in all %}{{ c.svg(x) }}{% endfor %}'
    )
    zeros = dict.fromkeys(("waiting", "active", "delayed", "prioritized", "paused"), 0)
    drawn = [
        charts.throughput_chart(Throughput(IMG, [0, 60_000], [3, 1], [0, 2])),
        charts.processing_chart(ProcessingTimes(IMG, 2, {50: 5, 90: 9, 99: 9}, 9)),
        charts.depth_chart(
            [QueueCounts(queue=IMG, **zeros, completed=1, failed=2, dlq=0, is_paused=False,
                         completed_recent=1, failed_recent=2)],
            [TaskQueueState(SCRIPT, "workflow", 4, 1.0, 0.0, 0.0, 0)],
        ),
        charts.orders_chart({9: {SCRIPT: 2, "CONFIRMED": 1}}, ZoneInfo("Asia/Kolkata")),
    ]  # fmt: skip
    svg = page.render(all=drawn)
    assert not any(raw in svg for raw in RAW_MARKUP), svg
    assert svg.count("&lt;img src=x") >= 5 and svg.count("&lt;script&gt;") >= 3


@pytest.mark.parametrize(
    "link",
    ["javascript:alert(document.cookie)", " JavaScript:alert(1)", "data:text/html,<script>x</script>",
     "vbscript:msgbox(1)", "//evil.example/reset"],
)  # fmt: skip
def test_mail_refuses_a_link_that_is_not_http_or_https(
    settings: Settings, engine: Engine, link: str
) -> None:
    processor = EmailProcessor(settings, email_spec(settings), engine)
    job = _reset_job(settings, link)
    with pytest.raises(MalformedJobError, match=r"data\.resetUrl is not an http\(s\) link"):
        processor.render(job)


def test_mail_keeps_an_https_reset_link(settings: Settings, engine: Engine) -> None:
    processor = EmailProcessor(settings, email_spec(settings), engine)
    mail = processor.render(_reset_job(settings, "https://shop.example/reset/r-1001"))
    assert 'href="https://shop.example/reset/r-1001"' in mail.html


def _reset_job(settings: Settings, link: str) -> Job:
    return Job(
        id="reset-r-1001",
        name="send-password-reset",
        data={"to": "a@example.com", "subject": "Reset", "data": {"resetUrl": link}},
        opts={},
        attempts_made=0,
        timestamp=0,
        token="t",
        queue=email_spec(settings).name,
    )
