"""Bridge producer, guard and worker runtime against a real redis-server."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from bisect import bisect_left
from typing import Any

import pytest
from bullmq import UnrecoverableError

from bridge.connect import redis_client
from bridge.dlq import DeadLetterQueue
from bridge.errors import PayloadRejectedError, RetryLater
from bridge.job import Job
from bridge.producer import BulkJob, QueueProducer
from bridge.runtime import BridgeWorker
from bridge.specs import RateLimit
from orderflow.settings import Settings
from tests.bridge_helpers import bull_queue, counts, eventually, running, unique_spec

MAIL = {"to": "a@example.com", "subject": "Hi", "template": "welcome", "data": {"name": "A"}}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url)


async def test_same_job_id_adds_one_job(settings: Settings, redis_url: str) -> None:
    spec = unique_spec(settings)
    producer = QueueProducer.connect(spec, redis_url)
    first = await producer.add("send-order-confirmation", MAIL, {"jobId": "order-confirmation-o1"})
    again = await producer.add("send-order-confirmation", MAIL, {"jobId": "order-confirmation-o1"})
    assert first == again == "order-confirmation-o1"
    assert (await counts(spec, redis_url))["waiting"] == 1
    queue = bull_queue(spec, redis_url)
    job = await queue.getJob(first)
    await queue.close()
    assert job.data == MAIL
    assert job.opts["attempts"] == 3
    assert job.opts["backoff"] == {"type": "exponential", "delay": 2000}
    assert job.opts["removeOnComplete"] == {"age": 86400, "count": 1000}
    await producer.close()


async def test_guard_refuses_secrets_and_large_payloads(settings: Settings, redis_url: str) -> None:
    spec = unique_spec(settings, max_payload_bytes=1024)
    producer = QueueProducer.connect(spec, redis_url)
    nested = {**MAIL, "data": {"customer": {"payment": [{"card_number": "4242424242424242"}]}}}
    with pytest.raises(PayloadRejectedError, match=r"'welcome-1'.*data\.data\.customer"):
        await producer.add("send-welcome", nested, {"jobId": "welcome-1"})
    with pytest.raises(PayloadRejectedError, match="password"):
        await producer.add("send-password-reset", {**MAIL, "data": {"newPassword": "x"}})
    with pytest.raises(PayloadRejectedError, match="over the 1024-byte limit"):
        await producer.add("send-welcome", {**MAIL, "data": {"blob": "x" * 2000}})
    with pytest.raises(PayloadRejectedError):  # all or nothing: one bad job refuses the batch
        await producer.add_bulk([BulkJob("send-welcome", MAIL), BulkJob("x", {"apiKey": "k"})])
    assert sum((await counts(spec, redis_url)).values()) == 0
    await producer.close()


async def test_rate_limit_holds_in_every_one_second_window(
    settings: Settings, redis_url: str
) -> None:
    spec = unique_spec(settings)  # the seed's numbers: concurrency 5, 100 jobs per second
    assert spec.rate_limit == RateLimit(100, 1000) and spec.concurrency == 5
    producer = QueueProducer.connect(spec, redis_url)
    total = 260
    await producer.add_bulk([BulkJob("send-welcome", {"i": i}) for i in range(total)])
    starts: list[float] = []

    async def record(job: Job) -> None:
        starts.append(time.time())

    async with running(spec, record, redis_url):
        await eventually(lambda: _at_least(starts, total), within=10)
    # the limit is on starts as BullMQ records them (processedOn, the grant on Redis's clock);
    # the processor's own clock sees them later, by however long a loaded event loop takes
    queue = bull_queue(spec, redis_url)
    jobs = await queue.getJobs(["completed"], 0, -1)
    await queue.close()
    assert len(jobs) == total
    starts = sorted(job.processedOn / 1000 for job in jobs)
    busiest = max(bisect_left(starts, t + 1.0) - i for i, t in enumerate(starts))
    assert busiest <= 100
    assert busiest >= 90, "the limiter throttled far below its limit"
    assert starts[-1] - starts[0] >= 2.0  # 260 starts at 100/s need more than two seconds
    await producer.close()


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def test_exponential_backoff_then_dlq_then_redrive(
    settings: Settings, redis_url: str
) -> None:
    spec = unique_spec(settings, rate_limit=None, backoff={"type": "exponential", "delay": 400})
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", MAIL, {"jobId": "flaky-1"})
    starts: list[float] = []
    healthy = asyncio.Event()

    async def flaky(job: Job) -> str:
        starts.append(time.monotonic())
        if not healthy.is_set():
            raise ConnectionError(f"smtp down for {job.id}")
        return "sent"

    dlq = DeadLetterQueue(spec, redis_client(redis_url, prefix=spec.prefix))
    async with running(spec, flaky, redis_url):
        await eventually(lambda: _dlq_has(dlq, 1), within=10)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert len(starts) == 3  # 3 attempts, then no more
        # never early; the bound above is the next step's delay (a loaded machine wakes late)
        assert 0.4 <= gaps[0] < 0.8  # 400 ms
        assert 0.8 <= gaps[1] < 1.6  # 800 ms
        [entry] = await dlq.list()
        assert entry.id == "flaky-1" and entry.name == "send-welcome" and entry.data == MAIL
        assert entry.attempts_made == 3 and not entry.unrecoverable
        assert entry.failed_reason == "smtp down for flaky-1"
        assert len(entry.stacktrace) == 3 and "ConnectionError" in entry.stacktrace[-1]
        healthy.set()
        assert await dlq.redrive("flaky-1") == "flaky-1"
        await eventually(lambda: _completed(spec, redis_url, 1))
    assert await dlq.count() == 0
    queue = bull_queue(spec, redis_url)
    job = await queue.getJob("flaky-1")
    await queue.close()
    assert job.returnvalue == "sent" and job.attemptsMade == 1
    await producer.close()
    await dlq.client.close()


async def test_the_dlq_keeps_a_job_its_remove_on_fail_removed_and_one_retried_that_fails_again(
    settings: Settings, redis_url: str
) -> None:
    """A DLQ read drops entries whose job is no longer failed; these two still failed for good."""
    spec = unique_spec(settings, rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", MAIL, {"jobId": "no-trace", "removeOnFail": True})
    await producer.add("send-welcome", MAIL, {"jobId": "twice"})

    dlq = DeadLetterQueue(spec, redis_client(redis_url, prefix=spec.prefix))
    queue = bull_queue(spec, redis_url)
    try:
        async with running(spec, _bounce, redis_url):
            await eventually(lambda: _dlq_has(dlq, 2), within=10)
            assert await queue.getJob("no-trace") is None  # its removeOnFail took it at once
            assert sorted(e.id for e in await dlq.list()) == ["no-trace", "twice"]
            await (await queue.getJob("twice")).retry("failed")  # as a Node tool would
            await eventually(lambda: _dlq_has(dlq, 2), within=10)  # failed for good again
        assert await queue.getJobState("twice") == "failed"
        assert sorted(e.id for e in await dlq.list()) == ["no-trace", "twice"]
    finally:
        await queue.close()
        await producer.close()
        await dlq.client.close()


async def test_the_dlq_keeps_jobs_a_later_failure_trims_by_remove_on_fail_count(
    settings: Settings, redis_url: str
) -> None:
    """removeOnFail {count: 1}: each final failure trims the older failed jobs; they stay in the DLQ."""
    spec = unique_spec(settings, rate_limit=None, remove_on_fail={"count": 1}, concurrency=1)
    producer = QueueProducer.connect(spec, redis_url)
    for job_id in ("first", "second", "third"):
        await producer.add("send-welcome", MAIL, {"jobId": job_id})

    dlq = DeadLetterQueue(spec, redis_client(redis_url, prefix=spec.prefix))
    queue = bull_queue(spec, redis_url)
    try:
        async with running(spec, _bounce, redis_url):
            await eventually(lambda: _failed_count(spec, redis_url, 3), within=10)
        assert (await counts(spec, redis_url))["failed"] == 1  # the count kept only the newest
        assert await queue.getJob("first") is None and await queue.getJob("second") is None
        assert sorted(e.id for e in await dlq.list()) == ["first", "second", "third"]
        assert await dlq.count() == 3
    finally:
        await queue.close()
        await producer.close()
        await dlq.client.close()


async def _failed_count(spec: Any, redis_url: str, n: int) -> bool:
    """n jobs have failed for good (the DLQ index is read raw: no prune)."""
    client = redis_client(redis_url, prefix=spec.prefix)
    try:
        return int(await client.execute("ZCARD", spec.dlq_keys[1])) >= n
    finally:
        await client.close()


async def _dlq_has(dlq: DeadLetterQueue, n: int) -> bool:
    return await dlq.count() >= n


async def _completed(spec: Any, redis_url: str, n: int) -> bool:
    return (await counts(spec, redis_url))["completed"] >= n


async def test_unrecoverable_error_is_not_retried(settings: Settings, redis_url: str) -> None:
    spec = unique_spec(settings, rate_limit=None, backoff={"type": "fixed", "delay": 10})
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", MAIL, {"jobId": "bad-address"})
    calls: list[str] = []

    async def refuse(job: Job) -> None:
        calls.append(job.id)
        raise UnrecoverableError(f"mailbox of {job.id} does not exist")

    dlq = DeadLetterQueue(spec, redis_client(redis_url, prefix=spec.prefix))
    async with running(spec, refuse, redis_url):
        await eventually(lambda: _dlq_has(dlq, 1))
    # stopped, and the job sits in `failed` with nothing waiting or delayed: no retry can follow
    assert calls == ["bad-address"]
    [entry] = await dlq.list()
    assert entry.unrecoverable and entry.attempts_made == 1
    after = await counts(spec, redis_url)
    assert after == {**after, "failed": 1, "waiting": 0, "delayed": 0, "active": 0}
    await dlq.purge()
    assert await dlq.count() == 0 and (await counts(spec, redis_url))["failed"] == 0
    await producer.close()
    await dlq.client.close()


async def test_job_timeout_fails_the_attempt(settings: Settings, redis_url: str) -> None:
    spec = unique_spec(settings, rate_limit=None, timeout_seconds=0.3)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", MAIL, {"jobId": "hangs", "attempts": 2, "backoff": 50})
    cancelled: list[str] = []

    async def hang(job: Job) -> None:
        try:
            await asyncio.sleep(30)  # a job that hangs: the 0.3 s job timeout must cancel it
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise

    dlq = DeadLetterQueue(spec, redis_client(redis_url, prefix=spec.prefix))
    async with running(spec, hang, redis_url):
        await eventually(lambda: _dlq_has(dlq, 1))
    [entry] = await dlq.list()
    assert entry.failed_reason == f"{spec.name}: job 'hangs' (send-welcome) timed out after 0.3s"
    assert entry.attempts_made == 2 and cancelled == ["hangs", "hangs"]
    await producer.close()
    await dlq.client.close()


async def test_custom_backoff_strategy(settings: Settings, redis_url: str) -> None:
    spec = unique_spec(settings, rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    opts = {"jobId": "custom", "attempts": 3, "backoff": {"type": "linear"}}
    await producer.add("send-welcome", MAIL, opts)
    starts: list[float] = []
    seen: list[tuple[int, str | None]] = []

    def linear(attempts_made: int, kind: str | None, err: BaseException, job: Job) -> int:
        seen.append((attempts_made, kind))
        return 250 * attempts_made

    async def fail(job: Job) -> None:
        starts.append(time.monotonic())
        raise RuntimeError("nope")

    async with running(spec, fail, redis_url, backoff_strategy=linear):
        await eventually(lambda: _at_least(starts, 3))
    assert seen == [(1, "linear"), (2, "linear")]
    # never early; half a second's room above for a loaded machine's late wake-up
    assert 0.25 <= starts[1] - starts[0] < 0.25 + 0.5
    assert 0.5 <= starts[2] - starts[1] < 0.5 + 0.5
    await producer.close()


async def test_malformed_job_fails_clearly_and_worker_goes_on(
    settings: Settings, redis_url: str
) -> None:
    spec = unique_spec(settings, rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", MAIL, {"jobId": "broken", "delay": 300})
    await producer.client.execute("HSET", f"{spec.prefix}:{spec.name}:broken", "data", "{oops")
    await producer.add("send-welcome", MAIL, {"jobId": "fine", "delay": 400})
    done: list[str] = []

    async def ok(job: Job) -> str:
        done.append(job.id)
        return "ok"

    dlq = DeadLetterQueue(spec, redis_client(redis_url, prefix=spec.prefix))
    async with running(spec, ok, redis_url):
        await eventually(lambda: _completed(spec, redis_url, 1))
    [entry] = await dlq.list()
    assert entry.id == "broken" and entry.unrecoverable
    assert entry.failed_reason.startswith(f"{spec.name}: malformed job 'broken' (send-welcome)")
    assert done == ["fine"]
    await producer.close()
    await dlq.client.close()


async def test_graceful_shutdown_finishes_active_jobs_and_leaves_the_rest(
    settings: Settings, redis_url: str
) -> None:
    spec = unique_spec(settings, rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add_bulk([BulkJob("send-welcome", {"i": i}) for i in range(20)])
    started: list[str] = []
    finished: list[str] = []

    async def slow(job: Job) -> None:
        started.append(job.id)
        await asyncio.sleep(0.4)  # the work itself, long enough to be active at the stop
        finished.append(job.id)

    async with running(spec, slow, redis_url, grace=5):
        await eventually(lambda: _at_least(started, spec.concurrency))
        await eventually(lambda: _at_least(finished, 1))
    after = await counts(spec, redis_url)
    assert after["active"] == 0 and after["failed"] == 0
    assert after["completed"] == len(finished) >= 5  # every active job finished
    assert after["completed"] + after["waiting"] == 20
    await producer.close()


async def test_shutdown_past_grace_hands_jobs_back(settings: Settings, redis_url: str) -> None:
    spec = unique_spec(settings, rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add_bulk([BulkJob("send-welcome", {"i": i}) for i in range(8)])
    started: list[str] = []

    async def endless(job: Job) -> None:
        started.append(job.id)
        await asyncio.sleep(60)  # outlasts the 0.2 s grace: the stop must hand the job back

    async with running(spec, endless, redis_url, grace=0.2):
        await eventually(lambda: _at_least(started, 5))
    after = await counts(spec, redis_url)
    assert after == {**after, "active": 0, "failed": 0, "completed": 0, "waiting": 8}
    done: list[str] = []

    async def quick(job: Job) -> None:
        done.append(job.id)

    async with running(spec, quick, redis_url):
        await eventually(lambda: _completed(spec, redis_url, 8))
    assert sorted(done, key=int) == [str(i) for i in range(1, 9)]
    queue = bull_queue(spec, redis_url)
    job = await queue.getJob(started[0])
    await queue.close()
    assert job.attemptsMade == 1  # the handed-back attempt did not count
    await producer.close()


async def test_progress_and_return_value(settings: Settings, redis_url: str) -> None:
    spec = unique_spec(settings, rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", MAIL, {"jobId": "p1"})

    async def work(job: Job) -> dict[str, Any]:
        await job.update_progress(50)
        await job.log("half way")
        return {"to": job.data["to"]}

    async with running(spec, work, redis_url):
        await eventually(lambda: _completed(spec, redis_url, 1))
    queue = bull_queue(spec, redis_url)
    job = await queue.getJob("p1")
    await queue.close()
    assert job.progress == 50 and job.returnvalue == {"to": "a@example.com"}
    logs = await producer.client.execute("LRANGE", f"{spec.prefix}:{spec.name}:p1:logs", 0, -1)
    assert logs == ["half way"]
    raw = await producer.client.execute("HGET", f"{spec.prefix}:{spec.name}:p1", "returnvalue")
    assert json.loads(raw) == {"to": "a@example.com"}
    await producer.close()


async def test_a_job_fetched_while_stopping_goes_back_to_wait(
    settings: Settings, redis_url: str
) -> None:
    """Stop arriving during a finish that also fetches the next job must not strand that job."""
    spec = unique_spec(settings, rate_limit=None, concurrency=1)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add_bulk([BulkJob("send-welcome", {"i": i}) for i in range(3)])
    stop = asyncio.Event()
    seen: list[str] = []

    async def record(job: Job) -> None:
        seen.append(job.id)

    worker = BridgeWorker(spec, record, redis_url)
    real_call = worker.client.call

    async def stopping() -> bool:
        return worker._stopping

    async def stop_during_finish(prepared: Any, rest: Any) -> Any:
        if prepared is worker._complete_call:
            stop.set()
            await eventually(stopping)  # the worker sees the stop while this finish is in flight
        return await real_call(prepared, rest)

    worker.client.call = stop_during_finish  # type: ignore[method-assign]
    await asyncio.wait_for(worker.run(stop, grace_seconds=5), 20)
    after = await counts(spec, redis_url)
    assert seen == ["1"]
    assert after == {**after, "active": 0, "completed": 1, "waiting": 2}
    await producer.close()


async def test_retry_later_delays_a_job_without_counting_an_attempt(
    settings: Settings, redis_url: str
) -> None:
    """BullMQ's DelayedError: an outage is waited out, not charged against the job's attempts."""
    spec = unique_spec(settings, rate_limit=None, attempts=2)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", MAIL, {"jobId": "outage-1"})
    starts: list[float] = []

    async def outage_then_ok(job: Job) -> str:
        starts.append(time.monotonic())
        if len(starts) <= 4:  # more tries than the job's 2 attempts allow
            raise RetryLater(100, f"dependency down for {job.id}")
        return "sent"

    async with running(spec, outage_then_ok, redis_url):
        await eventually(lambda: _completed(spec, redis_url, 1))
    queue = bull_queue(spec, redis_url)
    job = await queue.getJob("outage-1")
    await queue.close()
    assert len(starts) == 5 and job.returnvalue == "sent"
    assert job.attemptsMade == 1  # only the attempt that finished counts
    assert all(b - a >= 0.1 for a, b in itertools.pairwise(starts))
    await producer.close()


async def test_a_redriven_job_that_fails_for_good_before_the_redrive_returns_keeps_its_dlq_entry(
    settings: Settings, redis_url: str
) -> None:
    """The worker may take a re-driven job and fail it for good before redrive() is done."""
    spec, producer, dlq = await _one_job_and_its_dlq(settings, redis_url, "doomed")
    failures: list[str] = []

    async def always_fails(job: Job) -> None:
        failures.append(job.id)
        await _mailbox_gone(job)

    real_run = dlq.client.run

    async def run_then_fail_again(script: Any, keys: Any, args: Any) -> Any:
        result = await real_run(script, keys, args)
        if script.name == "reprocessJob":  # the job is waiting again: the worker fails it first
            await eventually(lambda: _at_least(failures, 2), what="the re-driven job failing")
            await eventually(lambda: _failed(spec, redis_url, "doomed"), what="failed for good")
        return result

    async with running(spec, always_fails, redis_url):
        await eventually(lambda: _dlq_has(dlq, 1), within=10)
        dlq.client.run = run_then_fail_again  # type: ignore[method-assign]
        assert await dlq.redrive("doomed") == "doomed"
    assert await _failed(spec, redis_url, "doomed")
    assert [entry.id for entry in await dlq.list()] == ["doomed"], (
        "a job failed for good left the DLQ"
    )
    await producer.close()
    await dlq.client.close()


async def _failed(spec: Any, redis_url: str, job_id: str) -> bool:
    queue = bull_queue(spec, redis_url)
    try:
        return await queue.getJobState(job_id) == "failed"
    finally:
        await queue.close()


async def test_a_redrive_that_fails_at_redis_keeps_the_dlq_entry(
    settings: Settings, redis_url: str
) -> None:
    spec, producer, dlq = await _one_job_and_its_dlq(settings, redis_url, "stuck")
    async with running(spec, _mailbox_gone, redis_url):
        await eventually(lambda: _dlq_has(dlq, 1), within=10)
    [before] = await dlq.list()
    real_run = dlq.client.run

    async def refused(script: Any, keys: Any, args: Any) -> Any:
        if script.name == "reprocessJob":
            raise ConnectionError("redis went away mid-redrive")
        return await real_run(script, keys, args)

    dlq.client.run = refused  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await dlq.redrive("stuck")
    dlq.client.run = real_run  # type: ignore[method-assign]
    assert await dlq.list() == [before]
    assert await _failed(spec, redis_url, "stuck")
    await producer.close()
    await dlq.client.close()


async def _one_job_and_its_dlq(
    settings: Settings, redis_url: str, job_id: str
) -> tuple[Any, QueueProducer, DeadLetterQueue]:
    """A queue whose jobs have one attempt, with one job `job_id` waiting; its spec, producer, DLQ."""
    spec = unique_spec(settings, rate_limit=None, attempts=1)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", MAIL, {"jobId": job_id})
    return spec, producer, DeadLetterQueue(spec, redis_client(redis_url, prefix=spec.prefix))


async def _mailbox_gone(job: Job) -> None:
    raise RuntimeError(f"mailbox of {job.id} gone")


async def _bounce(job: Job) -> str:
    raise UnrecoverableError(f"mailbox of job {job.id} is full")
