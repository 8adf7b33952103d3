"""The email worker end to end: templates, SMTP delivery into the sink, exactly-once under kill -9."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.engine import Engine

from app import embedded
from app.smtp_sink import SmtpSink
from bridge.connect import redis_client
from bridge.dlq import DeadLetterQueue
from bridge.job import Job
from bridge.producer import QueueProducer
from bridge.redis_client import RedisClient
from mail.processor import EmailProcessor, message_id_for
from orderflow.settings import Settings
from tests.bridge_helpers import OwnRedis, bull_queue, counts, eventually, running, unique_spec

CHILD = Path(__file__).with_name("bridge_child.py")
ORDER_MAIL = {
    "to": "asha@example.com",
    "subject": "Order Confirmed — o-1001",
    "template": "send-order-confirmation",
    "data": {
        "orderNumber": "o-1001",
        "items": [{"sku": "MUG-1", "quantity": 2, "unitPrice": 499.75}],
        "total": 999.5,
        "currency": "INR",
        "note": "<script>alert(1)</script>",
    },
}


@pytest.fixture
def settings(redis_url: str, sink: SmtpSink) -> Settings:
    return Settings(redis_url=redis_url, smtp_host=sink.host, smtp_port=sink.port)


async def test_order_confirmation_is_rendered_and_delivered(
    mail_engine: Engine, settings: Settings, sink: SmtpSink, redis_url: str
) -> None:
    spec = unique_spec(settings)
    producer = QueueProducer.connect(spec, redis_url)
    job_id = await producer.add(
        "send-order-confirmation", ORDER_MAIL, {"jobId": "order-confirmation-o-1001"}
    )
    seed_style = {**ORDER_MAIL, "to": "ravi@example.com", "template": "order_confirmation"}
    await producer.add("send-order-confirmation", seed_style)
    client = RedisClient(redis_url)
    async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):
        await eventually(lambda: _completed(spec, redis_url, 2))
    [mail] = sink.store.messages(to="asha@example.com")
    assert mail.subject == "Order Confirmed — o-1001"
    assert mail.message_id == message_id_for(spec.name, job_id, ORDER_MAIL)
    assert mail.header("X-Orderflow-Job") == f"{spec.name}/send-order-confirmation/{job_id}"
    assert "o-1001" in mail.text and "₹999.50" in mail.text and "MUG-1 x 2" in mail.text
    assert "<script>alert(1)</script>" in mail.text  # plain text is not escaped ...
    assert "&lt;script&gt;" in mail.html and "<script>" not in mail.html  # ... HTML is
    assert "₹999.50" in sink.store.messages(to="ravi@example.com")[0].html
    queue = bull_queue(spec, redis_url)
    job = await queue.getJob(job_id)
    await queue.close()
    assert job.returnvalue == {"sent": True, "messageId": mail.message_id}
    await producer.close()
    await client.close()


async def test_malformed_email_job_goes_to_the_dlq(
    mail_engine: Engine, settings: Settings, sink: SmtpSink, redis_url: str
) -> None:
    spec = unique_spec(settings)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", {"subject": "Hi", "data": {}}, {"jobId": "no-to"})
    await producer.add("send-welcome", {**ORDER_MAIL, "template": "nope"}, {"jobId": "no-tpl"})
    no_qty = {"orderNumber": "o-9", "items": [{"sku": "MUG-1", "price": 5}], "total": 5}
    seed_style = {**ORDER_MAIL, "template": "order_confirmation", "data": no_qty}
    await producer.add("send-order-confirmation", seed_style, {"jobId": "no-qty"})
    client = RedisClient(redis_url)
    dlq = DeadLetterQueue(spec, client)
    async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):
        await eventually(lambda: _dlq_count(dlq, 3))
    reasons = {e.id: e.failed_reason for e in await dlq.list()}
    assert reasons == {
        "no-to": f"{spec.name}: malformed job 'no-to' (send-welcome): bad recipient None",
        "no-tpl": f"{spec.name}: malformed job 'no-tpl' (send-welcome): unknown template 'nope'",
        "no-qty": f"{spec.name}: malformed job 'no-qty' (send-order-confirmation):"
        " data.items[0] has none of quantity, qty",
    }
    assert all(e.attempts_made == 1 for e in await dlq.list())
    assert sink.store.deliveries() == []
    await producer.close()
    await client.close()


@pytest.mark.parametrize("mode", ["before-send", "after-send"])
async def test_kill_9_mid_job_delivers_exactly_one_email(
    mail_engine: Engine,
    settings: Settings,
    sink: SmtpSink,
    redis_url: str,
    tmp_path: Path,
    mode: str,
) -> None:
    spec = unique_spec(settings, lock_duration_ms=1000, stalled_interval_ms=500)
    producer = QueueProducer.connect(spec, redis_url)
    job_id = await producer.add("send-order-confirmation", ORDER_MAIL, {"jobId": "oc-kill"})
    marker = tmp_path / "marker"
    config = {
        "redis_url": redis_url, "smtp_port": sink.port, "prefix": spec.prefix,
        "queue": spec.name, "lock_ms": 1000, "stalled_ms": 500, "mode": mode,
        "marker": str(marker), "db_url": mail_engine.url.render_as_string(hide_password=False),
    }  # fmt: skip
    child = await asyncio.create_subprocess_exec(sys.executable, str(CHILD), json.dumps(config))
    try:

        async def job_taken() -> bool:
            assert child.returncode is None, f"the worker child exited ({child.returncode})"
            return marker.exists()

        await eventually(job_taken, 20, "the worker child taking the job")
        assert (await counts(spec, redis_url))["active"] == 1
    finally:
        child.kill()  # SIGKILL: no shutdown, the lock is left to expire
        await child.wait()
    client = redis_client(redis_url, prefix=spec.prefix)
    async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):
        await eventually(lambda: _completed(spec, redis_url, 1), within=15)
    deliveries = [m for m in sink.store.deliveries() if m.message_id == message_id_for(
        spec.name, job_id, ORDER_MAIL)]  # fmt: skip
    assert len(deliveries) == 1
    queue = bull_queue(spec, redis_url)
    job = await queue.getJob(job_id)
    await queue.close()
    assert job.returnvalue["sent"] is True
    assert job.returnvalue.get("duplicate", False) is (mode == "after-send")
    assert (await counts(spec, redis_url))["failed"] == 0
    await producer.close()
    await client.close()


async def _completed(spec: object, redis_url: str, n: int) -> bool:
    return (await counts(spec, redis_url))["completed"] >= n  # type: ignore[arg-type]


async def _dlq_count(dlq: DeadLetterQueue, n: int) -> bool:
    return await dlq.count() >= n


async def test_redis_sigkilled_between_smtp_accept_and_job_completion_still_gives_one_mail(
    mail_engine: Engine, sink: SmtpSink, tmp_path: Path
) -> None:
    redis = OwnRedis(tmp_path)
    try:
        client = RedisClient(redis.url)
        await client.execute("CONFIG", "SET", "appendfsync", "always")  # the AOF keeps every add
        await client.close()
        settings = Settings(redis_url=redis.url, smtp_host=sink.host, smtp_port=sink.port)
        # a lock shorter than the outage: the job stalls and runs again, as in the fault run
        spec = unique_spec(settings, lock_duration_ms=1000, stalled_interval_ms=500)
        producer = QueueProducer.connect(spec, redis.url)
        job_id = await producer.add("send-order-confirmation", ORDER_MAIL, {"jobId": "oc-crash"})
        email = EmailProcessor(settings, spec, mail_engine)
        runs: list[dict[str, Any]] = []

        async def crash_after_smtp(job: Job) -> dict[str, Any]:
            result = await email(job)  # SMTP accepted (on the first run)
            runs.append(result)
            if len(runs) == 1:
                await asyncio.to_thread(redis.kill)  # SIGKILL before the job is completed
                await asyncio.sleep(2)  # the outage: longer than the job's lock
                await asyncio.to_thread(redis.start)  # back on the same AOF
            return result

        async with running(spec, crash_after_smtp, redis.url):
            await eventually(lambda: _completed(spec, redis.url, 1), within=20)
        message_id = message_id_for(spec.name, job_id, ORDER_MAIL)
        deliveries = [m for m in sink.store.deliveries() if m.message_id == message_id]
        assert len(deliveries) == 1
        assert len(runs) == 2 and runs[1].get("duplicate") is True  # it did run again
        assert await asyncio.to_thread(EmailProcessor(settings, spec, mail_engine).deliveries.status, message_id) == "SENT"  # fmt: skip
        await producer.close()
    finally:
        redis.stop()


class SilentRelay:
    """An SMTP relay that takes the message after DATA and never answers it (a lost reply)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.port = embedded.free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope.original_content or envelope.content)
        await asyncio.sleep(3600)  # the reply to the message never comes
        return "250 too late"

    def __enter__(self) -> SilentRelay:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


def reset_mail(to: str, link: str) -> dict[str, Any]:
    """A password-reset job as the seed's Node producer writes it."""
    return {"to": to, "subject": "Reset your password", "template": "password_reset",
            "data": {"resetUrl": link}}  # fmt: skip


async def test_a_node_job_id_handed_out_again_after_redis_lost_writes_sends_the_new_mail(
    mail_engine: Engine, settings: Settings, sink: SmtpSink, redis_url: str
) -> None:
    """Node producers use auto ids 1, 2, ...; a Redis that lost its last second gives them again."""
    spec = unique_spec(settings)
    producer = QueueProducer.connect(spec, redis_url)
    first = await producer.add(
        "send-password-reset", reset_mail("asha@example.com", "https://shop.example/help/1")
    )
    async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):
        await eventually(lambda: _completed(spec, redis_url, 1))
    queue = bull_queue(spec, redis_url)
    await queue.obliterate(force=True)  # the queue as a failover to a lagging replica left it
    await queue.close()
    second = await producer.add(
        "send-password-reset", reset_mail("ravi@example.com", "https://shop.example/help/2")
    )
    assert first == second == "1"
    async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):
        await eventually(lambda: _completed(spec, redis_url, 1))
    [mail] = await sink.store.wait_for(1, to="ravi@example.com")
    assert "https://shop.example/help/2" in mail.text
    assert len(sink.store.messages(to="asha@example.com")) == 1
    await producer.close()


async def test_a_relay_that_takes_the_message_but_never_answers_gets_it_once_and_the_job_says_why(
    mail_engine: Engine, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mail.processor.SMTP_TIMEOUT_SECONDS", 1.0)
    with SilentRelay() as relay:
        settings = Settings(redis_url=redis_url, smtp_host="127.0.0.1", smtp_port=relay.port)
        spec = unique_spec(settings, attempts=3, backoff={"type": "fixed", "delay": 100})
        producer = QueueProducer.connect(spec, redis_url)
        job_id = await producer.add("send-order-confirmation", ORDER_MAIL, {"jobId": "oc-silent"})
        client = RedisClient(redis_url)
        dlq = DeadLetterQueue(spec, client)
        async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):
            await eventually(lambda: _dlq_count(dlq, 1), within=20)
            [entry] = await dlq.list()
            assert entry.attempts_made == 1  # not retried: a retry would send it again
            await dlq.redrive(job_id)  # an operator retries it at once: still not sent again

            async def failed_again() -> bool:
                return await dlq.count() == 1 and (await counts(spec, redis_url))["failed"] == 1

            await eventually(failed_again, within=20)
        assert len(relay.received) == 1
        [entry] = await dlq.list()
        message_id = message_id_for(spec.name, job_id, ORDER_MAIL)
        assert "outcome unknown" in entry.failed_reason and message_id in entry.failed_reason
        assert "no reply to DATA" in entry.failed_reason
        assert "not sent again" in entry.failed_reason
        status = await asyncio.to_thread(
            EmailProcessor(settings, spec, mail_engine).deliveries.status, message_id
        )
        assert status == "UNKNOWN"
        await producer.close()
        await client.close()


async def test_the_same_job_added_again_after_it_was_sent_is_sent_once(
    mail_engine: Engine, settings: Settings, sink: SmtpSink, redis_url: str
) -> None:
    """Our notify activity re-adds its job with the same id and data when retried."""
    spec = unique_spec(settings)
    producer = QueueProducer.connect(spec, redis_url)
    queue = bull_queue(spec, redis_url)
    for _ in range(2):
        await producer.add("send-order-confirmation", ORDER_MAIL, {"jobId": "oc-again"})
        async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):
            await eventually(lambda: _completed(spec, redis_url, 1))
        job = await queue.getJob("oc-again")
        await queue.obliterate(force=True)  # gone from Redis: the next add is a new job
    assert job.returnvalue["duplicate"] is True
    message_id = message_id_for(spec.name, "oc-again", ORDER_MAIL)
    assert [m.message_id for m in sink.store.deliveries()] == [message_id]
    await queue.close()
    await producer.close()


async def test_a_relay_that_refuses_the_connection_gets_the_mail_on_the_retry(
    mail_engine: Engine, redis_url: str, tmp_path: Path
) -> None:
    """Nothing was handed over: the claim is released and the next attempt sends."""
    port = embedded.free_port()
    settings = Settings(redis_url=redis_url, smtp_host="127.0.0.1", smtp_port=port)
    spec = unique_spec(settings, attempts=5, backoff={"type": "fixed", "delay": 300})
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-order-confirmation", ORDER_MAIL, {"jobId": "oc-refused"})
    queue = bull_queue(spec, redis_url)
    async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):

        async def tried() -> bool:
            job = await queue.getJob("oc-refused")
            return job is not None and job.attemptsMade >= 1

        await eventually(tried, what="a first attempt refused at connect")
        sink = SmtpSink(tmp_path / "late", "127.0.0.1", port).start()
        try:
            await eventually(lambda: _completed(spec, redis_url, 1), within=20)
        finally:
            sink.stop()
    job = await queue.getJob("oc-refused")
    assert job.returnvalue == {
        "sent": True,
        "messageId": message_id_for(spec.name, "oc-refused", ORDER_MAIL),
    }
    assert len(sink.store.deliveries()) == 1
    await queue.close()
    await producer.close()
