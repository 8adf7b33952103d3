"""Redis behind Sentinel: a failover (manual, or the primary killed) mid-run loses no job, sends
each mail once, and the workers, producers and ingress follow the new primary by themselves.

A primary, its replica and one Sentinel are real redis-server processes on free ports.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from app.smtp_sink import SmtpSink
from app.web.app import create_app
from bridge.job import Job
from bridge.producer import BulkJob, QueueProducer
from mail.processor import EmailProcessor
from orderflow.settings import Settings
from payments.providers.stripe import sign_stripe
from tests.bridge_helpers import counts, eventually, running, unique_spec
from tests.sentinel_helpers import SentinelTopology
from tests.test_webhook_ingress import STRIPE_SECRET, stripe_event

JOBS = 1000  # of each kind: 1,000 mails and 1,000 webhook jobs
RESUME_BOUND_SECONDS = 10.0  # measured: about 1 s after SENTINEL FAILOVER, 2-3 s after kill -9


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    servers = SentinelTopology(tmp_path).start()
    yield servers
    servers.stop()


def _mail(i: int) -> BulkJob:
    data = {"to": f"u{i}@example.com", "subject": f"Welcome {i}", "template": "welcome",
            "data": {"name": f"U{i}"}}  # fmt: skip
    return BulkJob("send-welcome", data, {"jobId": f"m-{i}"})


class Ingress:
    """Posts signed Stripe events to the app's ingress in a loop; keeps every answer."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.answers: list[tuple[float, int, str]] = []  # (time, status, event id)
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            event_id = f"evt_{uuid.uuid4().hex[:12]}"
            body = stripe_event(event_id)
            sig = {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET)}
            response = await self.http.post("/webhooks/stripe", content=body, headers=sig)
            self.answers.append((time.monotonic(), response.status_code, event_id))
            await asyncio.sleep(0.01)


async def _failover_run(
    topology: SentinelTopology, sink: SmtpSink, engine: Engine, kill: bool
) -> dict[str, float]:
    url = topology.url
    settings = Settings(redis_url=url, smtp_host=sink.host, smtp_port=sink.port,
                        stripe_webhook_secret=STRIPE_SECRET)  # fmt: skip
    email = unique_spec(settings, rate_limit=None, concurrency=20)
    hooks = unique_spec(settings, rate_limit=None, concurrency=20)
    inbox = unique_spec(settings, rate_limit=None)  # the ingress queue (read, not processed)
    producer = QueueProducer.connect(email, url)
    hook_producer = QueueProducer.connect(hooks, url)
    for start in range(0, JOBS, 250):
        await producer.add_bulk([_mail(i) for i in range(start, start + 250)])
        await hook_producer.add_bulk(
            [BulkJob("stripe-webhook", {"n": i}, {"jobId": f"h-{i}"}) for i in range(start, start + 250)]
        )  # fmt: skip
    runs: Counter[str] = Counter()
    finished: list[float] = []

    async def webhook(job: Job) -> None:
        await asyncio.sleep(0.005)  # the job's own work
        runs[job.id] += 1
        finished.append(time.monotonic())

    mails = EmailProcessor(settings, email, engine)

    async def mail(job: Job) -> object:
        result = await mails(job)
        finished.append(time.monotonic())
        return result

    ingress_queue = QueueProducer.connect(inbox, url)
    transport = httpx.ASGITransport(app=create_app(settings, ingress_queue))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
        running(email, mail, url),
        running(hooks, webhook, url),
    ):
        ingress = Ingress(http)
        poster = asyncio.create_task(ingress.run())
        await eventually(lambda: _at_least(finished, 300), within=30, what="300 jobs done")
        switched_at = time.monotonic()
        old = await asyncio.to_thread(topology.kill_primary if kill else topology.failover)
        await eventually(lambda: _moved(topology, old), within=30, what="a new primary")
        await eventually(lambda: _after(finished, switched_at), within=30, what="work resumed")
        more = len(finished) + 50
        await eventually(lambda: _at_least(finished, more), within=30, what="50 more jobs done")
        # the workers' pause: the longest gap between two completions from the switch on
        times = sorted(t for t in finished if t >= switched_at - 1)
        resumed = max(b - a for a, b in itertools.pairwise(times))
        await eventually(lambda: _ok_after(ingress, switched_at), within=30, what="ingress 200")
        await eventually(lambda: _all_done(email, hooks, url), within=40, what="every job done")
        ingress.stop.set()
        await poster
    statuses = Counter(status for _, status, _ in ingress.answers)
    assert set(statuses) <= {200, 503}, statuses  # never another 5xx
    assert ingress.answers[-1][1] == 200
    accepted = [event for _, status, event in ingress.answers if status == 200]
    queued = await counts(inbox, url)
    assert sum(queued.values()) == len(accepted), (
        queued,
        len(accepted),
    )  # no acknowledged event lost
    delivered = Counter(m.message_id for m in sink.store.deliveries())
    assert len(delivered) == JOBS and set(delivered.values()) == {1}  # every mail, once
    assert set(runs) == {f"h-{i}" for i in range(JOBS)}
    assert resumed < RESUME_BOUND_SECONDS, resumed
    for client in (producer, hook_producer, ingress_queue):
        await client.close()
    figures = {"resumed_s": round(resumed, 2), "ingress_503": statuses[503],
               "ingress_200": statuses[200], "webhook_reruns": sum(runs.values()) - JOBS}  # fmt: skip
    print(f"\nsentinel {'kill -9' if kill else 'FAILOVER'}: {figures}")
    return figures


async def _at_least(items: list[float], n: int) -> bool:
    return len(items) >= n


async def _after(items: list[float], moment: float) -> bool:
    return any(t > moment + 0.01 for t in items[-50:])


async def _moved(topology: SentinelTopology, old: int) -> bool:
    try:
        return await asyncio.to_thread(topology.primary_port) != old
    except Exception:
        return False


async def _ok_after(ingress: Ingress, moment: float) -> bool:
    return any(t > moment and status == 200 for t, status, _ in ingress.answers[-20:])


async def _all_done(email: object, hooks: object, url: str) -> bool:
    done = [(await counts(spec, url))["completed"] for spec in (email, hooks)]  # type: ignore[arg-type]
    return done == [JOBS, JOBS]


async def test_sentinel_failover_mid_run_loses_nothing_and_mails_once(
    topology: SentinelTopology, sink: SmtpSink, mail_engine: Engine
) -> None:
    await _failover_run(topology, sink, mail_engine, kill=False)


@pytest.mark.xfail(
    strict=False,
    reason="open defect (issue 22): in two of three fresh-clone suite runs (2026-12-04, 9f59435 and fd71bd3)"
    " after kill -9 of the primary the workers did not finish 50 more jobs within 30 s, clients"
    " still connecting to the killed primary's port; it passed in the others and alone",
)
async def test_primary_killed_mid_run_workers_follow_the_promoted_replica(
    topology: SentinelTopology, sink: SmtpSink, mail_engine: Engine
) -> None:
    await _failover_run(topology, sink, mail_engine, kill=True)
