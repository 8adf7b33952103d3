"""The Temporal Web UI decodes an order's input through orderflow's codec server, in Chromium.

One real `orderflow run` (everything embedded, as `make run` starts it: the dev server's UI
pointed at the HTTP app's `/codec`) takes an order through the order API. A browser signed in
to the codec, with the UI's "include cross-origin credentials" on, reads the customer's email
on the workflow's page; a browser without the credentials, or with them but without that
setting (the dev server's default), sees only the ciphertext Temporal stores.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from temporalio.client import Client

from app import embedded
from orderflow.contracts.order import order_workflow_id
from orderflow.settings import LOCAL_API_KEY, Settings
from tests.helpers import eventually
from tests.temporal_env import TEST_CODEC_KEY
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS

ORDERFLOW = str(Path(sys.executable).parent / "orderflow")
EMAIL = "ui.reader@example.com"
SHOWN_WITHIN_MS = 20_000  # the UI's page, its history and the codec's answers
COULD_NOT_CONNECT = "Codec Server could not connect"  # the UI's banner when the codec refuses


@dataclass
class Stack:
    """The running `orderflow run`, its ports and the order it took."""

    http: str  # the HTTP app, as the UI's codec endpoint names it (localhost)
    ui: str
    temporal: str
    order_id: str
    ciphertext: str  # the start of the input's data as Temporal stores it (base64)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    folder = tmp_path_factory.mktemp("codec-ui")
    ports = {name: embedded.free_port() for name in ("temporal", "ui", "http", "redis", "smtp")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORDERFLOW_", "OTEL_"))},
        "ORDERFLOW_DATA_DIR": str(folder / "data"),
        "ORDERFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
        "ORDERFLOW_TEMPORAL_UI_PORT": str(ports["ui"]),
        "ORDERFLOW_HTTP_PORT": str(ports["http"]),
        "ORDERFLOW_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "ORDERFLOW_SMTP_PORT": str(ports["smtp"]),
        "ORDERFLOW_CODEC_KEY": TEST_CODEC_KEY.spec(),
        "ORDERFLOW_GRACEFUL_SHUTDOWN_SECONDS": "5",
        "ORDERFLOW_BRIDGE_GRACE_SECONDS": "5",
    }
    log = folder / "run.log"
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            ORDERFLOW, "run", env=env, stdout=out, stderr=out
        )
    http = f"http://localhost:{ports['http']}"
    try:
        async with httpx.AsyncClient(base_url=http, timeout=30) as client:

            async def healthy() -> bool:
                assert proc.returncode is None, log.read_text(errors="replace")[-3000:]
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(healthy, within=60, what="orderflow run answering /healthz")
            order_id = f"codec-ui-{uuid.uuid4().hex[:8]}"
            body = {"order_id": order_id, "customer_id": "c-ui", "email": EMAIL}
            body["items"] = [{"sku": "MUG-01", "quantity": 1}]  # the starter catalogue's
            headers = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
            placed = await client.post("/api/v1/orders", json=body, headers=headers)
            assert placed.status_code == 201, placed.text
        raw = await Client.connect(env["ORDERFLOW_TEMPORAL_ADDRESS"])  # no codec: as stored
        history = await raw.get_workflow_handle(order_workflow_id(order_id)).fetch_history()
        [stored] = history.events[0].workflow_execution_started_event_attributes.input.payloads
        assert (
            stored.metadata["encoding"] == b"binary/encrypted" and EMAIL.encode() not in stored.data
        )
        yield Stack(
            http, f"http://localhost:{ports['ui']}", env["ORDERFLOW_TEMPORAL_ADDRESS"], order_id,
            base64.b64encode(stored.data).decode()[:48],
        )  # fmt: skip
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def sign_in(page: Page, stack: Stack) -> None:
    """Open `GET /codec` with the ops credentials once: the browser keeps them for that origin."""
    settings = Settings()
    host = stack.http.removeprefix("http://")
    answer = await page.goto(f"http://{settings.admin_user}:{settings.admin_password}@{host}/codec")
    assert answer is not None and answer.status == 200


async def include_credentials(page: Page, stack: Stack) -> None:
    """In the UI's Codec Server dialog (its top bar's codec icon): this browser's endpoint, the
    one the dev server's UI names (`make run`'s `--ui-codec-endpoint`), with "Include
    cross-origin credentials" on. The UI takes that switch only beside a browser endpoint, and
    the dev server has no flag for it."""
    await page.goto(stack.ui)
    endpoint = await page.evaluate(
        "async () => (await (await fetch('/api/v1/settings')).json()).Codec.Endpoint"
    )
    assert endpoint == f"{stack.http}/codec"  # the runner pointed the UI at the HTTP app
    await page.locator('[data-testid^="data-encoder-status"]').first.click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_text("Use my browser setting").click()
    await dialog.locator("#data-encoder-endpoint-input").fill(endpoint)
    await dialog.get_by_text("Include cross-origin credentials").click()
    await dialog.get_by_role("button", name="Apply").click()
    stored = await page.evaluate("() => localStorage.getItem('includeCredentials')")
    assert stored == "true"


async def open_order(page: Page, stack: Stack) -> int:
    """The order's workflow page; the status of the UI's first call to the codec."""
    url = f"{stack.ui}/namespaces/default/workflows/{order_workflow_id(stack.order_id)}"
    async with page.expect_response(
        lambda r: "/codec/decode" in r.url and r.request.method == "POST", timeout=SHOWN_WITHIN_MS
    ) as first:
        await page.goto(url)
    return (await first.value).status


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()  # a fresh profile: no credentials, no UI settings
    yield context
    await context.close()


async def encrypted(page: Page, stack: Stack) -> None:
    """The page shows the UI's codec error and the input as Temporal stores it, no email."""
    body = page.locator("body")
    await expect(body).to_contain_text(COULD_NOT_CONNECT, timeout=SHOWN_WITHIN_MS)
    await expect(body).to_contain_text(stack.ciphertext)
    assert EMAIL not in await page.content()


async def test_the_ui_shows_the_orders_input_decoded_once_the_browser_signed_in(
    stack: Stack, context: BrowserContext
) -> None:
    page = await context.new_page()
    await include_credentials(page, stack)
    assert await open_order(page, stack) == 401  # the switch alone opens nothing
    await encrypted(page, stack)
    await sign_in(page, stack)
    assert await open_order(page, stack) == 200
    body = page.locator("body")
    await expect(body).to_contain_text(EMAIL, timeout=SHOWN_WITHIN_MS)
    await expect(body).to_contain_text('"sku": "MUG-01"')
    assert COULD_NOT_CONNECT not in await body.inner_text()
    assert stack.ciphertext not in await body.inner_text()


async def test_signed_in_with_the_dev_servers_default_the_ui_shows_only_the_ciphertext(
    stack: Stack, context: BrowserContext
) -> None:
    """The UI's default sends no cross-origin credentials: the codec refuses it."""
    page = await context.new_page()
    await sign_in(page, stack)
    assert await open_order(page, stack) == 401
    await encrypted(page, stack)
