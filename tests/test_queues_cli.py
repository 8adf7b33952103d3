"""`orderflow queues …` against a real Redis: every command, its --json parsed and checked."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from bullmq import UnrecoverableError
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from app.cli import app
from app.embedded import free_port
from bridge.admin import QueueAdmin
from bridge.job import Job
from bridge.producer import QueueProducer
from orderflow.contracts.mail import EMAIL_QUEUE
from orderflow.contracts.order import ORDERS_TASK_QUEUE
from orderflow.contracts.payment import PAYMENTS_TASK_QUEUE
from orderflow.settings import Settings
from tests.bridge_helpers import eventually, running
from tests.helpers import own_namespace
from workers.queues import queue_specs
from workflows.order import OrderWorkflow


async def _populate(settings: Settings) -> None:
    """3 completed (with progress and a log line), 3 dead-lettered, 1 delayed."""
    spec = queue_specs(settings)[EMAIL_QUEUE]
    producer = QueueProducer.connect(spec, settings.redis_url)
    for i in (1, 2, 3):
        await producer.add("send-welcome", {"to": f"u{i}@example.com"}, {"jobId": f"ok-{i}"})
        await producer.add("send-welcome", {"to": f"bad{i}@example.com"}, {"jobId": f"bad-{i}"})
    await producer.add(
        "send-welcome", {"to": "later@example.com"}, {"jobId": "later", "delay": 3_600_000}
    )

    async def process(job: Job) -> str:
        await job.update_progress(50)
        await job.log(f"processing {job.id}")
        if job.id.startswith("bad"):
            raise UnrecoverableError(f"mailbox {job.data['to']} does not exist")
        return "sent"

    admin = QueueAdmin(spec, settings.redis_url)
    async with running(spec, process, settings.redis_url):

        async def settled() -> bool:
            c = await admin.counts()
            return c.completed == 3 and c.dlq == 3

        await eventually(settled)
    await admin.close()
    await producer.close()


@pytest.fixture
async def namespace(env: WorkflowEnvironment) -> Client:
    """A Temporal namespace of this test's own: its task queues have no workers yet."""
    return await own_namespace(env.client, "cli")


@pytest.fixture
def cli_env(redis_url: str, namespace: Client) -> dict[str, str]:
    """The environment of `orderflow …`: a queue prefix and a Temporal namespace of the test's own."""
    return {
        "ORDERFLOW_REDIS_URL": redis_url,
        "ORDERFLOW_QUEUE_PREFIX": f"cli{uuid.uuid4().hex[:8]}",
        "ORDERFLOW_TEMPORAL_ADDRESS": namespace.service_client.config.target_host,
        "ORDERFLOW_TEMPORAL_NAMESPACE": namespace.namespace,
    }


def invoker(env: dict[str, str]) -> Any:
    """Invoke `orderflow …` with `env`; returns (exit code, output)."""
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.output

    return invoke


@pytest.fixture
def cli(redis_url: str, cli_env: dict[str, str]) -> Any:
    """`orderflow …` over populated bridge queues (see _populate)."""
    prefix = cli_env["ORDERFLOW_QUEUE_PREFIX"]
    asyncio.run(_populate(Settings(redis_url=redis_url, queue_prefix=prefix)))
    return invoker(cli_env)


def as_json(invoke: Any, *args: str) -> Any:
    code, out = invoke(*args, "--json")
    assert code == 0, out
    return json.loads(out)


def email_counts(invoke: Any) -> dict[str, Any]:
    [email] = [q for q in as_json(invoke, "queues", "counts") if q["queue"] == EMAIL_QUEUE]
    return email


def test_counts_failed_job_and_dlq_list(cli: Any) -> None:
    rows = as_json(cli, "queues")["bridge"]
    assert {r["queue"] for r in rows} == {"email-queue", "payment-webhook-queue"}
    email = next(r for r in rows if r["queue"] == EMAIL_QUEUE)
    assert (email["waiting"], email["active"], email["delayed"]) == (0, 0, 1)
    assert (email["completed"], email["failed"], email["dlq"]) == (3, 3, 3)
    assert email["completed_recent"] == 3 and not email["is_paused"]
    assert as_json(cli, "queues", "counts") == rows
    code, text = cli("queues")
    assert code == 0 and "email-queue" in text and "COMPLETED" in text

    failed = as_json(cli, "queues", "failed", "email")
    assert sorted(j["id"] for j in failed) == ["bad-1", "bad-2", "bad-3"]
    bad1 = next(j for j in failed if j["id"] == "bad-1")
    assert bad1["failed_reason"] == "mailbox bad1@example.com does not exist"
    assert bad1["attempts_made"] == 1 and bad1["data"] == {"to": "bad1@example.com"}

    job = as_json(cli, "queues", "job", "email-queue", "ok-2")
    assert (job["state"], job["progress"], job["logs"]) == ("completed", 50, ["processing ok-2"])
    code, text = cli("queues", "job", "email", "ok-2")
    assert code == 0 and "processing ok-2" in text

    dlq = as_json(cli, "queues", "dlq", "list", "email")
    assert [e["id"] for e in dlq] == ["bad-1", "bad-2", "bad-3"]
    assert all(e["unrecoverable"] and e["attempts_made"] == 1 for e in dlq)


def test_retry_redrive_purge_and_clean(cli: Any) -> None:
    assert as_json(cli, "queues", "retry", "email", "bad-1") == {"retried": ["bad-1"]}
    c = email_counts(cli)
    assert (c["waiting"], c["failed"], c["dlq"]) == (1, 2, 2)

    assert as_json(cli, "queues", "dlq", "redrive", "email", "bad-2") == {"redriven": ["bad-2"]}
    c = email_counts(cli)
    assert (c["waiting"], c["failed"], c["dlq"]) == (2, 1, 1)

    # the DLQ entry goes, the failed job stays: retry then takes BullMQ's own path
    assert as_json(cli, "queues", "dlq", "purge", "email", "bad-3", "--keep-jobs") == {"purged": 1}
    assert email_counts(cli)["dlq"] == 0
    assert as_json(cli, "queues", "retry", "email", "--all") == {"retried": ["bad-3"]}
    c = email_counts(cli)
    assert (c["waiting"], c["failed"], c["dlq"]) == (3, 0, 0)

    code, out = cli("queues", "retry", "email", "ok-1")
    assert code == 1 and "job 'ok-1' is completed, not failed" in out
    code, out = cli("queues", "dlq", "purge", "email", "nope")
    assert code == 1 and "no dead-lettered job 'nope'" in out

    # the seed's clean(7 days, 'failed') keeps fresh jobs; a zero grace takes them all
    assert as_json(cli, "queues", "clean", "email", "--state", "completed")["cleaned"] == []
    cleaned = as_json(cli, "queues", "clean", "email", "--state", "completed", "--older-than", "0")
    assert sorted(cleaned["cleaned"]) == ["ok-1", "ok-2", "ok-3"]
    cleaned = as_json(cli, "queues", "clean", "email", "--state", "waiting", "--older-than", "0s")
    assert sorted(cleaned["cleaned"]) == ["bad-1", "bad-2", "bad-3"]
    c = email_counts(cli)
    assert (c["waiting"], c["completed"], c["delayed"]) == (0, 0, 1)


def test_pause_resume_and_errors(cli: Any) -> None:
    code, out = cli("queues", "pause", "email")
    assert code == 0 and "email-queue: paused" in out
    assert email_counts(cli)["is_paused"] is True
    code, out = cli("queues", "resume", "email-queue")
    assert code == 0 and "resumed" in out
    assert email_counts(cli)["is_paused"] is False

    code, out = cli("queues", "failed", "nosuch")
    assert code == 1 and "unknown queue 'nosuch'" in out
    code, out = cli("queues", "job", "email", "missing-job")
    assert code == 1 and "email-queue: no job 'missing-job'" in out
    code, out = cli("queues", "clean", "email", "--older-than", "soon")
    assert code == 1 and "not like 30s" in out


async def test_queues_shows_a_started_worker_as_a_poller_and_workflows_no_worker_takes_as_backlog(
    namespace: Client, cli_env: dict[str, str]
) -> None:
    # three workflows on `payments`, which no worker of this namespace polls
    for i in range(3):
        await namespace.start_workflow(
            "PaymentRetryWorkflow", id=f"backlog-{i}", task_queue=PAYMENTS_TASK_QUEUE
        )
    invoke = invoker(cli_env)

    async def overview() -> dict[tuple[str, str], dict[str, Any]]:
        code, out = await asyncio.to_thread(invoke, "queues", "--json")
        assert code == 0, out
        data = json.loads(out)
        assert {q["queue"] for q in data["bridge"]} == {"email-queue", "payment-webhook-queue"}
        return {(q["task_queue"], q["type"]): q for q in data["temporal"]}

    async def backlog() -> bool:
        return (await overview())[PAYMENTS_TASK_QUEUE, "workflow"]["backlog"] == 3

    await eventually(backlog, what="3 workflow tasks waiting on payments")
    seen = await overview()
    assert {q for q, _ in seen} == {"orders", "payments", "inventory", "reviews"}
    assert seen[PAYMENTS_TASK_QUEUE, "workflow"]["pollers"] == 0
    assert seen[PAYMENTS_TASK_QUEUE, "workflow"]["backlog_age_seconds"] > 0
    assert seen[ORDERS_TASK_QUEUE, "workflow"]["pollers"] == 0

    worker = Worker(
        namespace, task_queue=ORDERS_TASK_QUEUE, workflows=[OrderWorkflow], identity="ops-test-1"
    )
    async with worker:

        async def polled() -> bool:
            orders = (await overview())[ORDERS_TASK_QUEUE, "workflow"]
            return orders["pollers"] == 1 and orders["poller_identities"] == ["ops-test-1"]

        await eventually(polled, what="the worker polling orders")
        code, text = await asyncio.to_thread(invoke, "queues")
    assert code == 0, text
    assert "Temporal task queues" in text and "BACKLOG" in text and "POLLERS" in text
    rows = [line.split() for line in text.splitlines()]
    [payments] = [r for r in rows if r[:2] == ["payments", "workflow"]]
    [orders] = [r for r in rows if r[:2] == ["orders", "workflow"]]
    assert (payments[2], payments[4], orders[4]) == ("3", "0", "1")  # backlog, pollers


def test_queues_shows_the_bridge_queues_and_names_temporal_when_it_does_not_answer(
    cli_env: dict[str, str],
) -> None:
    down = f"127.0.0.1:{free_port()}"
    code, out = invoker({**cli_env, "ORDERFLOW_TEMPORAL_ADDRESS": down})("queues")
    assert code == 1
    assert "email-queue" in out and "payment-webhook-queue" in out
    assert f"cannot reach Temporal at {down}" in out and "Traceback" not in out


def test_queues_shows_the_task_queues_and_names_redis_when_it_does_not_answer(
    cli_env: dict[str, str],
) -> None:
    port = free_port()  # no Redis listens here
    down = {**cli_env, "ORDERFLOW_REDIS_URL": f"redis://:s3cret-pw@127.0.0.1:{port}/0"}
    code, out = invoker(down)("queues")
    assert code == 1
    assert "Temporal task queues" in out and "BACKLOG" in out
    assert any(line.split()[:2] == ["orders", "workflow"] for line in out.splitlines())
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0 (ORDERFLOW_REDIS_URL)" in out
    assert "s3cret-pw" not in out and "Traceback" not in out
    code, out = invoker(down)("queues", "--json")
    data = json.loads(out[: out.rindex("}") + 1])
    assert data["bridge"] == [] and {q["task_queue"] for q in data["temporal"]} >= {"orders"}
    assert "ORDERFLOW_REDIS_URL" in data["bridge_error"]
