"""The bridge on a Redis Cluster of three primaries (real redis-server processes on free ports).

The core cases of the single-server suite run here again on the cluster (imported below: pytest
collects them in this module, so they get this module's `redis_url` and `settings`), with a
Node BullMQ producer and worker on the same `{…}` prefix, the untagged-prefix refusal, and the
queue's slot moved to another primary while jobs are added and processed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from app.smtp_sink import SmtpSink
from bridge.connect import redis_client
from bridge.job import Job
from bridge.producer import BulkJob, QueueProducer
from mail.processor import EmailProcessor
from orderflow.redis_url import RedisUrlError
from orderflow.settings import Settings
from tests.bridge_helpers import counts, eventually, running, unique_spec
from tests.cluster_helpers import ClusterTopology
from tests.test_bridge import (  # noqa: F401  (collected here, on the cluster)
    test_exponential_backoff_then_dlq_then_redrive,
    test_progress_and_return_value,
    test_rate_limit_holds_in_every_one_second_window,
    test_same_job_id_adds_one_job,
    test_unrecoverable_error_is_not_retried,
)
from tests.test_bridge_email import test_kill_9_mid_job_delivers_exactly_one_email  # noqa: F401
from tests.test_bridge_node import node, run_node, where  # noqa: F401
from tests.test_queues_cli import (  # noqa: F401
    cli,
    namespace,
    test_counts_failed_job_and_dlq_list,
    test_retry_redrive_purge_and_clean,
)

JOBS = 600  # jobs added and processed around the slot's move


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    servers = ClusterTopology(tmp_path_factory.mktemp("cluster")).start()
    yield servers
    servers.stop()


@pytest.fixture
def redis_url(cluster: ClusterTopology) -> str:
    """The cluster's URL as the settings write it (redis+cluster://seed,seed/0)."""
    return cluster.cluster_url


@pytest.fixture
def settings(cluster: ClusterTopology, sink: SmtpSink) -> Settings:
    return Settings(redis_url=cluster.url, redis_cluster=True, queue_prefix="{bull}",
                    smtp_host=sink.host, smtp_port=sink.port)  # fmt: skip


@pytest.fixture
def cli_env(cluster: ClusterTopology, namespace: object) -> dict[str, str]:  # noqa: F811
    """`orderflow …` on the cluster, as an operator sets it: the flag, seeds, a tagged prefix."""
    return {
        "ORDERFLOW_REDIS_CLUSTER": "true",
        "ORDERFLOW_REDIS_URL": cluster.url,
        "ORDERFLOW_QUEUE_PREFIX": f"{{cli{uuid.uuid4().hex[:8]}}}",
        "ORDERFLOW_TEMPORAL_ADDRESS": namespace.service_client.config.target_host,  # type: ignore[attr-defined]
        "ORDERFLOW_TEMPORAL_NAMESPACE": namespace.namespace,  # type: ignore[attr-defined]
    }


def test_settings_write_the_seed_list_as_a_cluster_url_and_refuse_an_untagged_prefix(
    cluster: ClusterTopology,
) -> None:
    settings = Settings(redis_url=cluster.url, redis_cluster=True, queue_prefix="{bull}",
                        redis_password="p@ss:w/rd")  # fmt: skip
    assert settings.redis_url.startswith("redis+cluster://:p%40ss%3Aw%2Frd@127.0.0.1:")
    assert settings.redis_data_password == "p@ss:w/rd"
    for prefix in ("bull", "{}bull", "bull}{"):
        with pytest.raises(ValidationError) as refused:
            Settings(redis_url=cluster.url, redis_cluster=True, queue_prefix=prefix)
        assert "ORDERFLOW_QUEUE_PREFIX must carry a hash tag" in str(refused.value)
    with pytest.raises(ValidationError, match="only database 0"):
        Settings(redis_url=cluster.url.replace("/0", "/2"), redis_cluster=True)
    with pytest.raises(RedisUrlError, match="ORDERFLOW_QUEUE_PREFIX"):
        redis_client(cluster.cluster_url, prefix="bull")  # a spec built past the settings


async def test_node_producer_and_node_worker_share_the_queue_on_the_cluster(
    node: str,  # noqa: F811
    redis_url: str,
    settings: Settings,
    sink: SmtpSink,
    mail_engine: Engine,
) -> None:
    spec = unique_spec(settings)
    data = {"to": "neha@example.com", "subject": "Welcome aboard", "template": "welcome",
            "data": {"name": "Neha"}}  # fmt: skip
    added = await run_node(node, "produce.js", *where(spec, redis_url), "send-welcome",
                           '{"to": "neha@example.com", "subject": "Welcome aboard",'
                           ' "template": "welcome", "data": {"name": "Neha"}}',
                           '{"jobId": "welcome-neha", "attempts": 3}')  # fmt: skip
    assert added == {"id": "welcome-neha"}
    async with running(spec, EmailProcessor(settings, spec, mail_engine), redis_url):
        await eventually(lambda: _completed(spec, redis_url, 1), what="the Node job mailed")
    [mail] = sink.store.messages(to="neha@example.com")
    assert mail.subject == data["subject"] and "Welcome, Neha" in mail.text
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", {**data, "subject": "Hi"}, {"jobId": "ours-1"})
    await producer.add("send-welcome", {**data, "subject": "Later"}, {"delay": 200})
    seen = await run_node(node, "worker.js", *where(spec, redis_url), "2")
    assert sorted(job["data"]["subject"] for job in seen) == ["Hi", "Later"]
    assert (await counts(spec, redis_url))["completed"] == 3
    await producer.close()


async def test_the_queues_slot_moves_to_another_primary_mid_run_and_no_job_is_lost(
    cluster: ClusterTopology, redis_url: str, settings: Settings
) -> None:
    spec = unique_spec(settings, rate_limit=None, concurrency=20)
    producer = QueueProducer.connect(spec, redis_url)
    runs: Counter[str] = Counter()

    async def work(job: Job) -> None:
        await asyncio.sleep(0.002)
        runs[job.id] += 1

    async def add(start: int, stop: int) -> None:
        for first in range(start, stop, 20):
            batch = range(first, min(first + 20, stop))
            await producer.add_bulk([BulkJob("send-welcome", {"n": i}, {"jobId": f"j-{i}"}) for i in batch])  # fmt: skip
            await asyncio.sleep(0.005)

    source = cluster.owner(spec.prefix)
    async with running(spec, work, redis_url) as worker:
        await add(0, JOBS // 3)
        await eventually(lambda: _ran(runs, 50), what="50 jobs done before the move")
        adding = asyncio.create_task(add(JOBS // 3, JOBS))  # adds go on during the move
        started = time.monotonic()
        _, target, moved = await asyncio.to_thread(cluster.move_slot, spec.prefix, pause=0.02)
        took = time.monotonic() - started
        await adding
        await eventually(lambda: _ran(runs, JOBS), within=40, what="every job processed")
        assert worker.client.port == target and producer.client.port == target
        followed = worker.client.redirects + worker.blocking.redirects + producer.client.redirects
    assert source != target and moved > 0
    assert set(runs) == {f"j-{i}" for i in range(JOBS)}  # nothing lost
    await eventually(lambda: _completed(spec, redis_url, JOBS), what="every job completed")
    assert (await counts(spec, redis_url))["failed"] == 0
    print(f"\ncluster slot move: {moved} keys in {took:.2f} s, {followed} redirects followed,"
          f" {sum(runs.values()) - JOBS} re-runs")  # fmt: skip
    await producer.close()


async def _ran(runs: Counter[str], n: int) -> bool:
    return len(runs) >= n


async def _completed(spec: object, redis_url: str, n: int) -> bool:
    return (await counts(spec, redis_url))["completed"] >= n  # type: ignore[arg-type]
