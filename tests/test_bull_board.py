"""bull-board (tools/bull-board), the Node dashboard Node users run, over our bridge queues."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bullmq import UnrecoverableError
from playwright.async_api import Browser, Locator, Page, expect

from app.embedded import free_port
from bridge.admin import QueueAdmin
from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.specs import QueueSpec
from orderflow.contracts.mail import EMAIL_QUEUE
from orderflow.contracts.payment import WEBHOOK_QUEUE, WebhookJob
from orderflow.settings import Settings
from tests import test_dashboard
from tests.bridge_helpers import eventually, running
from workers.queues import queue_specs

BOARD = Path(__file__).resolve().parent.parent / "tools" / "bull-board"
AUTH = ("admin", "board-test-password")
ARTIFACTS = test_dashboard.ARTIFACTS
browser = test_dashboard.browser  # headless Chromium, driven as in the ops dashboard's test


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with bull-board's packages installed from its lock if they are not yet."""
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node is not installed (Node 20 runs bull-board)")
    if not (BOARD / "node_modules" / "@bull-board" / "express").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BOARD, check=True)
    return binary


@pytest.fixture
async def board(
    node: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, dict[str, QueueSpec]]]:
    """bull-board on a free port over both bridge queues, under a key prefix of this test's own."""
    settings = Settings(redis_url=redis_url, queue_prefix=f"bb{os.getpid()}{tmp_path.name[-6:]}")
    specs = queue_specs(settings)
    config = {"redisUrl": redis_url, "prefix": settings.queue_prefix, "queues": list(specs),
              "user": AUTH[0], "password": AUTH[1]}  # fmt: skip
    port = free_port()
    env = {**os.environ, "BULL_BOARD_CONFIG": json.dumps(config), "BULL_BOARD_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        node, str(BOARD / "server.js"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line, (await proc.communicate())[1].decode()
        yield json.loads(line)["listening"].rstrip("/"), specs
    finally:
        proc.terminate()
        await proc.wait()


async def queues(base: str) -> dict[str, Any]:
    """bull-board's own API: every queue it shows, by name."""
    async with httpx.AsyncClient(auth=AUTH) as client:
        answer = await client.get(f"{base}/api/queues")
    answer.raise_for_status()
    return {q["name"]: q for q in answer.json()["queues"]}


def card(page: Page, queue: str) -> Locator:
    """The overview's card of one queue."""
    return page.locator("main li", has=page.locator(f'a[title="{queue}"]'))


async def test_bull_board_lists_our_queues_shows_a_failure_and_its_retry_is_completed_by_us(
    board: tuple[str, dict[str, QueueSpec]], browser: Browser, redis_url: str
) -> None:
    base, specs = board
    email, hooks = specs[EMAIL_QUEUE], specs[WEBHOOK_QUEUE]
    mail = QueueProducer.connect(email, redis_url)
    for job_id in ("welcome-1", "welcome-2", "bounced-1"):
        await mail.add("send-welcome", {"to": f"{job_id}@example.com"}, {"jobId": job_id})
    webhooks = QueueProducer.connect(hooks, redis_url)
    for n in (1, 2, 3):  # no webhook worker runs: they wait
        await webhooks.add(WebhookJob.STRIPE, {"provider": "stripe", "event_id": f"evt_{n}"})
    mailbox_up = asyncio.Event()

    async def send(job: Job) -> dict[str, str]:
        if job.id == "bounced-1" and not mailbox_up.is_set():
            raise UnrecoverableError(f"mailbox of {job.data['to']} is full")
        return {"sent": job.id}

    admin = QueueAdmin(email, redis_url)
    async with running(email, send, redis_url):

        async def settled() -> bool:
            counts = (await queues(base))[EMAIL_QUEUE]["counts"]
            return counts["completed"] == 2 and counts["failed"] == 1

        await eventually(settled)
        shown = await queues(base)
        assert shown[WEBHOOK_QUEUE]["counts"]["waiting"] == 3
        assert shown[EMAIL_QUEUE]["counts"] == {"active": 0, "completed": 2, "delayed": 0,
            "failed": 1, "prioritized": 0, "waiting": 0, "waiting-children": 0}  # fmt: skip
        assert (await admin.counts()).dlq == 1

        # what an operator sees in the browser
        ARTIFACTS.mkdir(exist_ok=True)
        context = await browser.new_context(
            http_credentials={"username": AUTH[0], "password": AUTH[1]},
            viewport={"width": 1400, "height": 1000},
        )
        page = await context.new_page()
        response = await page.goto(base + "/")
        assert response is not None and response.status == 200
        mail_card = card(page, EMAIL_QUEUE)
        hooks_card = card(page, WEBHOOK_QUEUE)
        await expect(mail_card.locator('a[href$="status=failed"]')).to_have_text("Failed1")
        await expect(mail_card).to_contain_text("3 Jobs")
        await expect(mail_card).not_to_contain_text("No workers")  # ours is listed
        await expect(hooks_card).to_contain_text("3 Jobs")
        await expect(hooks_card).to_contain_text("No workers")  # none runs in this test
        await page.screenshot(path=str(ARTIFACTS / "bull-board-queues.png"), full_page=True)
        await page.goto(f"{base}/queue/{EMAIL_QUEUE}?status=failed")
        main = page.locator("main")
        await expect(main).to_contain_text("bounced-1")
        await expect(main).to_contain_text("mailbox of bounced-1@example.com is full")
        await page.screenshot(path=str(ARTIFACTS / "bull-board-failed.png"), full_page=True)

        # retried with the job's Retry button (PUT /api/queues/<queue>/<job id>/retry)
        mailbox_up.set()
        retry = main.locator("button:has(svg.lucide-refresh-cw)").filter(has_not_text="Retry all")
        await retry.click()
        confirm = page.get_by_role("alertdialog")
        await expect(confirm).to_contain_text("Are you sure that you want to retry this job?")
        async with page.expect_response(lambda r: r.request.method == "PUT") as put:
            await confirm.get_by_role("button", name="Confirm").click()
        assert (await put.value).url == f"{base}/api/queues/{EMAIL_QUEUE}/bounced-1/retry"
        assert (await put.value).status == 204

        async def all_completed() -> bool:
            counts = (await queues(base))[EMAIL_QUEUE]["counts"]
            return counts["completed"] == 3 and counts["failed"] == 0

        await eventually(all_completed)
        await page.goto(base + "/")
        await expect(mail_card).to_contain_text("3 Jobs")
        await expect(mail_card.locator('a[href$="status=failed"]')).to_have_count(0)
        await page.goto(f"{base}/queue/{EMAIL_QUEUE}?status=completed")
        await expect(main).to_contain_text("bounced-1")
        await page.screenshot(path=str(ARTIFACTS / "bull-board-retried.png"), full_page=True)
        await context.close()
    assert (await admin.job("bounced-1")).state == "completed"
    async with httpx.AsyncClient(auth=AUTH) as client:
        seen = (await client.get(f"{base}/api/queues/{EMAIL_QUEUE}/bounced-1")).json()
    assert seen["job"]["returnValue"] == {"sent": "bounced-1"}, seen
    assert seen["status"] == "completed", seen
    assert (await admin.counts()).dlq == 0  # the DLQ entry went with its retried job
    async with httpx.AsyncClient() as client:  # the board can change jobs: never without login
        assert (await client.get(f"{base}/api/queues")).status_code == 401
    for closing in (mail, webhooks, admin):
        await closing.close()


def _board_config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERFLOW_", "BULL_BOARD_"))}
    return subprocess.run(
        [sys.executable, str(BOARD / "config.py")],
        env={**clean, **env}, capture_output=True, text=True, timeout=60,
        cwd=BOARD.parent.parent,
    )  # fmt: skip


def test_bull_board_beyond_loopback_with_the_public_default_admin_password_is_refused() -> None:
    refused = _board_config(BULL_BOARD_HOST="0.0.0.0")
    assert refused.returncode != 0 and refused.stdout == ""  # no config, so no board starts
    assert "ORDERFLOW_ADMIN_PASSWORD" in refused.stderr and "0.0.0.0" in refused.stderr
    assert "orderflow-local-admin" not in refused.stderr  # the secret is not echoed

    on_loopback = _board_config()  # the laptop default: 127.0.0.1 with the local credential
    assert on_loopback.returncode == 0, on_loopback.stderr
    assert json.loads(on_loopback.stdout)["user"] == "admin"
    exposed = _board_config(BULL_BOARD_HOST="0.0.0.0", ORDERFLOW_ADMIN_PASSWORD="n0t-a-default-7Qz")
    assert exposed.returncode == 0, exposed.stderr
