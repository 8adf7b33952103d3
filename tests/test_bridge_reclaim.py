"""A bridge worker killed with SIGKILL mid-burst: its restart finishes every active job in seconds."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import pytest

from bridge.job import Job
from bridge.producer import BulkJob, QueueProducer
from bridge.runtime import BridgeWorker
from bridge.specs import LOCK_DURATION_MS, STALLED_INTERVAL_MS
from orderflow.settings import Settings
from tests.bridge_helpers import counts, eventually, running, unique_spec

CHILD = Path(__file__).with_name("bridge_child.py")
BURST = 40
CONCURRENCY = 10


async def test_worker_killed_mid_burst_has_every_active_job_finished_within_15s_of_restart(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "orderflow.bridge")
    # production timings: a 30 s lock and a 30 s stalled-job check
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None, concurrency=CONCURRENCY)
    assert (spec.lock_duration_ms, spec.stalled_interval_ms) == (30_000, 30_000)
    producer = QueueProducer.connect(spec, redis_url)
    jobs = [BulkJob("send-welcome", {"to": f"u{i}@example.com"}, {"jobId": f"b-{i}"}) for i in range(BURST)]  # fmt: skip
    await producer.add_bulk(jobs)
    marker = tmp_path / "started"
    config = {
        "redis_url": redis_url, "smtp_port": 1, "prefix": spec.prefix, "queue": spec.name,
        "lock_ms": LOCK_DURATION_MS, "stalled_ms": STALLED_INTERVAL_MS, "mode": "hang",
        "marker": str(marker), "concurrency": CONCURRENCY,
        "db_url": f"sqlite:///{tmp_path / 'child.db'}",
    }  # fmt: skip
    child = await asyncio.create_subprocess_exec(sys.executable, str(CHILD), json.dumps(config))
    try:
        await eventually(lambda: _started(marker, CONCURRENCY), within=20, what="burst taken")
        assert (await counts(spec, redis_url))["active"] == CONCURRENCY
    finally:
        child.kill()  # SIGKILL: no shutdown, no hand-back; its locks stay for 30 s
        await child.wait()
    stranded = set(_lines(marker))
    done: set[str] = set()

    async def process(job: Job) -> None:
        done.add(job.id)

    restarted = time.monotonic()
    async with running(spec, process, redis_url):
        await eventually(lambda: _superset(done, stranded), within=15, what="stranded jobs")
        took = time.monotonic() - restarted
        await eventually(lambda: _count(done, BURST), within=15, what="the whole burst")
    assert done == {f"b-{i}" for i in range(BURST)}
    final = await counts(spec, redis_url)
    assert (final["completed"], final["active"], final["failed"]) == (BURST, 0, 0)
    assert took < 15, took
    assert any("took back" in r.getMessage() for r in caplog.records)
    await producer.close()


async def test_live_worker_keeps_its_jobs_when_another_starts(redis_url: str) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None, concurrency=2)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add_bulk([BulkJob("send-welcome", {"to": "a@example.com"}, {"jobId": f"l-{i}"}) for i in range(2)])  # fmt: skip
    release = asyncio.Event()
    runs: list[str] = []

    async def slow(job: Job) -> None:
        runs.append(job.id)
        await release.wait()

    async with running(spec, slow, redis_url):
        await eventually(lambda: _count_list(runs, 2), what="both jobs taken")
        # a second worker starts and looks for dead workers' jobs for a while: none are
        async with running(spec, slow, redis_url) as second:
            # its reclaim looks every second while the first worker's jobs are active
            await eventually(lambda: _checks(second, 3), what="three looks for dead workers")
            assert (await counts(spec, redis_url))["active"] == 2
            release.set()
        await eventually(lambda: _done(spec, redis_url, 2), what="both finished")
    assert sorted(runs) == ["l-0", "l-1"]  # each ran once: nothing was taken from the live one
    await producer.close()


async def _started(marker: Path, n: int) -> bool:
    return len(_lines(marker)) >= n


def _lines(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


async def _superset(done: set[str], wanted: set[str]) -> bool:
    return done >= wanted


async def _count(done: set[str], n: int) -> bool:
    return len(done) >= n


async def _count_list(runs: list[str], n: int) -> bool:
    return len(runs) >= n


async def _checks(worker: BridgeWorker, n: int) -> bool:
    return worker.reclaim_checks >= n


async def _done(spec: object, redis_url: str, n: int) -> bool:
    return (await counts(spec, redis_url))["completed"] >= n  # type: ignore[arg-type]


async def test_a_job_finished_between_the_reclaim_reads_is_not_taken_back(redis_url: str) -> None:
    """The reclaim check reads the active list, then the locks: a job finished in between has
    no lock any more, like a stalled one, but it is no longer active and must be left alone."""
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)

    async def noop(job: Job) -> None:
        return None

    worker = BridgeWorker(spec, noop, redis_url)
    k = worker.keys
    await worker.client.execute("RPUSH", k["active"], "stalled-job")
    released = await worker.client.run(
        worker._release_script,
        [k["stalled"], k["stalled-check"], k["active"]],
        [k.base, "finished-job", "", "stalled-job", ""],
    )
    assert released == 1
    assert await worker.client.execute("SMEMBERS", k["stalled"]) == ["stalled-job"]
    await worker.client.close()
