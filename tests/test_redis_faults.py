"""Bridge workers ride out Redis error replies and restarts, and resume by themselves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from bridge.job import Job
from bridge.producer import BulkJob, QueueProducer
from orderflow.settings import Settings
from tests.bridge_helpers import OwnRedis, counts, eventually, running, unique_spec
from tests.fake_redis import BUSY, LOADING, READONLY, FakeRedis


@pytest.fixture
async def fake(redis_url: str) -> AsyncIterator[FakeRedis]:
    url = urlparse(redis_url)
    proxy = await FakeRedis(url.hostname or "127.0.0.1", url.port or 6379).start()
    yield proxy
    await proxy.close()


def _mail(i: int) -> BulkJob:
    return BulkJob("send-welcome", {"to": f"u{i}@example.com"}, {"jobId": f"w-{i}"})


def _lines(caplog: pytest.LogCaptureFixture, worker_name: str, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if worker_name in r.getMessage() and text in r.getMessage()]  # fmt: skip


async def test_worker_rides_out_loading_then_readonly_then_recovers_and_keeps_processing(
    fake: FakeRedis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "orderflow.bridge")
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)  # straight to Redis
    await producer.add_bulk([_mail(i) for i in range(5)])
    done: set[str] = set()

    async def process(job: Job) -> None:
        done.add(job.id)

    fake.mode = LOADING  # the worker starts while Redis replays its AOF
    async with running(spec, process, fake.url) as worker:
        await eventually(lambda: _at_least(fake, "LOADING", 5), what="LOADING answered")
        fake.mode = READONLY  # then a failover leaves it on a replica for a while
        await eventually(lambda: _at_least(fake, "READONLY", 5), what="READONLY answered")
        fake.mode = "pass"
        await eventually(lambda: _has(done, 5), within=15, what="first five jobs")
        # mid-run: a script keeps Redis busy, then it answers again
        fake.mode = BUSY
        await eventually(lambda: _at_least(fake, "BUSY", 3), what="BUSY answered")
        fake.mode = "pass"
        # idle slots must be woken by new jobs: the marker loop survived every error reply
        await producer.add_bulk([_mail(i) for i in range(5, 10)])
        await eventually(lambda: _has(done, 10), within=15, what="jobs added after recovery")
        failing = _lines(caplog, worker.name, "redis failing")
        back = _lines(caplog, worker.name, "redis is back")
    assert done == {f"w-{i}" for i in range(10)}
    assert (await counts(spec, redis_url))["completed"] == 10
    # one line per change of state, not one per retry
    assert "start-up: LOADING" in failing[0] and "READONLY" in failing[1], failing
    assert any("BUSY" in line for line in failing)
    assert 3 <= len(failing) <= 4 and 2 <= len(back) <= 3, (failing, back)
    await producer.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    yield server
    server.stop()


async def test_redis_restarted_mid_run_loses_no_job_and_the_worker_resumes_by_itself(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "orderflow.bridge")
    url = own_redis.url
    spec = unique_spec(Settings(redis_url=url), rate_limit=None, concurrency=5)
    producer = QueueProducer.connect(spec, url)
    first = 200
    await producer.add_bulk([_mail(i) for i in range(first)])
    done: set[str] = set()

    async def process(job: Job) -> None:
        await asyncio.sleep(0.01)  # the job's own work
        done.add(job.id)

    async with running(spec, process, url) as worker:
        await eventually(lambda: _has(done, 40), within=15, what="a fifth processed")
        await asyncio.to_thread(own_redis.restart)
        await eventually(lambda: _has(done, first), within=30, what="every job before restart")
        await producer.add_bulk([_mail(i) for i in range(first, first + 20)])
        await eventually(lambda: _has(done, first + 20), within=15, what="jobs after restart")
        back = _lines(caplog, worker.name, "redis is back")
    assert done == {f"w-{i}" for i in range(first + 20)}
    assert (await counts(spec, url))["completed"] == first + 20
    assert back, "the worker logged that Redis came back"
    await producer.close()


async def _at_least(fake: FakeRedis, kind: str, n: int) -> bool:
    return fake.errors[kind] >= n


async def _has(done: set[str], n: int) -> bool:
    return len(done) >= n


async def test_worker_starts_when_its_acl_forbids_info_and_client_list(
    fake: FakeRedis, redis_url: str
) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add_bulk([_mail(i) for i in range(3)])
    done: set[str] = set()

    async def process(job: Job) -> None:
        done.add(job.id)

    noperm = "NOPERM this user has no permissions to run the '{}' command"
    fake.refused = {"INFO": noperm.format("info"), "CLIENT": noperm.format("client")}
    async with running(spec, process, fake.url):
        await eventually(lambda: _has(done, 3), what="jobs processed without INFO")
    assert fake.errors["NOPERM"] >= 1
    await producer.close()
