"""Queue operations (BullMQ's Queue API plus the DLQ): counts, failed jobs, retry, clean, pause.

The CLI (`orderflow queues`), the dashboard and the metrics endpoint all read queues through here.
Reads and state changes go through BullMQ's own Lua scripts (the Python port's Queue), so a Node
BullMQ board or script sees exactly the same state.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bullmq import Queue

from bridge.connect import bullmq_connection, redis_client
from bridge.dlq import DeadLetter, DeadLetterQueue
from bridge.redis_client import Arg
from bridge.scripts import DEPTH_KEY, DEPTH_TYPES, Keys, clean_script
from bridge.specs import QueueSpec
from orderflow.errors import OrderflowError

# getJobCounts types, in the order people read them ("wait" is BullMQ's key for waiting)
COUNT_TYPES = ("waiting", "active", "delayed", "prioritized", "paused", "completed", "failed")
# Queue.clean's set names; "waiting" is accepted for "wait"
CLEANABLE = ("completed", "failed", "wait", "delayed", "prioritized", "paused", "active")
THROUGHPUT_WINDOW_SECONDS = 300  # "recent throughput": jobs finished in the last 5 minutes
MINUTE_MS = 60_000  # BullMQ's metrics granularity is fixed at one minute
TIMED_JOBS = 1000  # processing times come from at most this many newest completed jobs
PERCENTILES = (50, 90, 99)


class UnknownQueueError(OrderflowError):
    """No bridge queue has this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown queue {name!r}; known queues: {', '.join(known)}")
        self.queue = name


class UnknownJobError(OrderflowError):
    """The queue has no job with this id."""

    def __init__(self, queue: str, job_id: str) -> None:
        super().__init__(f"{queue}: no job {job_id!r}")
        self.queue, self.job_id = queue, job_id


class JobNotRetryableError(OrderflowError):
    """Only failed jobs (or dead-lettered ones) can be retried."""

    def __init__(self, queue: str, job_id: str, state: str) -> None:
        super().__init__(f"{queue}: job {job_id!r} is {state}, not failed; nothing to retry")
        self.queue, self.job_id, self.state = queue, job_id, state


@dataclass(frozen=True)
class QueueCounts:
    """getJobCounts of one queue plus its DLQ size, pause flag and recent throughput."""

    queue: str
    waiting: int
    active: int
    delayed: int
    prioritized: int
    paused: int
    completed: int
    failed: int
    dlq: int
    is_paused: bool
    completed_recent: int  # finished in the last THROUGHPUT_WINDOW_SECONDS
    failed_recent: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json and templates."""
        return asdict(self)


@dataclass(frozen=True)
class JobInfo:
    """What an operator needs to know about one job."""

    id: str
    name: str
    queue: str
    state: str
    data: Any
    attempts_made: int
    failed_reason: str
    progress: Any
    timestamp: int
    processed_on: int
    finished_on: int
    logs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json and templates."""
        return asdict(self)


@dataclass(frozen=True)
class Throughput:
    """Jobs completed and failed per minute (BullMQ's metrics), oldest minute first."""

    queue: str
    minutes: list[int]  # each minute's start, Unix ms
    completed: list[int]
    failed: list[int]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json and templates."""
        return asdict(self)


@dataclass(frozen=True)
class ProcessingTimes:
    """Percentiles of processedOn → finishedOn over recently completed jobs, in ms."""

    queue: str
    jobs: int  # how many completed jobs they were taken from
    percentiles: dict[int, int]  # {50: ms, 90: ms, 99: ms}; empty without jobs
    max_ms: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json and templates."""
        return asdict(self)


@dataclass(frozen=True)
class DepthSample:
    """A queue's jobs waiting (paused ones too), delayed, prioritized and active at one minute."""

    minute: int  # the minute's start, Unix ms
    waiting: int
    paused: int
    active: int
    delayed: int
    prioritized: int

    @property
    def depth(self) -> int:
        """Jobs not yet finished: everything waiting its turn plus those running."""
        return self.waiting + self.paused + self.active + self.delayed + self.prioritized


@dataclass(frozen=True)
class DepthHistory:
    """The depth samples the queue's workers recorded (one a minute), oldest first."""

    queue: str
    minutes: list[int]  # every minute of the window, Unix ms; samples may miss some
    samples: list[DepthSample]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json and templates."""
        return asdict(self)


def depth_samples(raw: dict[str, str], first: int, last: int) -> list[DepthSample]:
    """The samples of the minutes first..last (ms) in the depth hash, oldest first.

    A field that is not a sample (another writer's) is skipped, not fatal: it is monitoring.
    """
    found: list[DepthSample] = []
    for field_name, value in raw.items():
        try:
            minute, counts = int(field_name), json.loads(value)
            sample = DepthSample(minute, **{t: int(counts.get(t, 0)) for t in DEPTH_TYPES})
        except (ValueError, TypeError, AttributeError):
            continue
        if first <= minute <= last:
            found.append(sample)
    return sorted(found, key=lambda s: s.minute)


def per_minute(meta: list[Any], data: list[Any], first_minute: int, minutes: int) -> list[int]:
    """BullMQ's metrics as one count per minute from `first_minute` (minute number, ms // 60000).

    BullMQ (collectMetrics in moveToFinished) keeps the minute of `prevTS` open as
    `count - prevCount` and pushes it to the head of the data list when the first job of a later
    minute finishes (with a zero for each minute without jobs), so data[i] is the count of the
    i+1-th minute before the open one.
    """
    count, prev_ts, prev_count = (int(v) if v not in (None, b"", "") else None for v in meta)
    by_minute: dict[int, int] = {}
    if prev_ts is not None:
        open_minute = prev_ts // MINUTE_MS
        by_minute[open_minute] = (count or 0) - (prev_count or 0)
        for i, point in enumerate(data):
            by_minute[open_minute - 1 - i] = int(point or 0)
    return [by_minute.get(first_minute + i, 0) for i in range(minutes)]


def percentile(sorted_values: list[int], pct: int) -> int:
    """The nearest-rank percentile of an ascending list."""
    rank = max(1, -(-pct * len(sorted_values) // 100))
    return sorted_values[rank - 1]


def clean_set(state: str) -> str:
    """Queue.clean's name for a state ("waiting" → "wait")."""
    name = "wait" if state == "waiting" else state
    if name not in CLEANABLE:
        raise OrderflowError(f"cannot clean state {state!r}; one of {', '.join(CLEANABLE)}")
    return name


class QueueAdmin:
    """Operations on one bridge queue and its dead-letter queue."""

    def __init__(self, spec: QueueSpec, redis_url: str) -> None:
        self.spec = spec
        connection = bullmq_connection(redis_url)  # a Sentinel URL: a client following the primary
        self.queue = Queue(spec.name, {"connection": connection, "prefix": spec.prefix})
        self.client = redis_client(
            redis_url, name=f"orderflow:admin:{spec.name}", prefix=spec.prefix
        )
        self.dlq = DeadLetterQueue(spec, self.client)
        self.keys = Keys(spec.prefix, spec.name)

    async def close(self) -> None:
        """Close both connections."""
        await self.queue.close()
        await self.client.close()

    async def counts(self, window_seconds: float = THROUGHPUT_WINDOW_SECONDS) -> QueueCounts:
        """Counts per state (BullMQ getJobCounts), the DLQ size and jobs finished recently."""
        raw = await self.queue.getJobCounts(*COUNT_TYPES)
        since = int((time.time() - window_seconds) * 1000)
        done, failed = await self.client.pipeline(
            [
                ["ZCOUNT", self.keys["completed"], since, "+inf"],
                ["ZCOUNT", self.keys["failed"], since, "+inf"],
            ]
        )
        return QueueCounts(
            queue=self.spec.name,
            **{t: int(raw.get(t, 0)) for t in COUNT_TYPES},
            dlq=await self.dlq.count(),
            is_paused=bool(await self.queue.isPaused()),
            completed_recent=int(done),
            failed_recent=int(failed),
        )

    async def throughput(self, minutes: int = 60, now_ms: int | None = None) -> Throughput:
        """Jobs completed and failed in each of the last `minutes` minutes (BullMQ getMetrics)."""
        now_minute = (now_ms if now_ms is not None else int(time.time() * 1000)) // MINUTE_MS
        first = now_minute - minutes + 1
        commands: list[list[Any]] = []
        for kind in ("completed", "failed"):
            key = self.keys["metrics:" + kind]
            commands.append(["HMGET", key, "count", "prevTS", "prevCount"])
            commands.append(["LRANGE", key + ":data", 0, minutes])
        done_meta, done_data, failed_meta, failed_data = await self.client.pipeline(commands)
        return Throughput(
            queue=self.spec.name,
            minutes=[(first + i) * MINUTE_MS for i in range(minutes)],
            completed=per_minute(done_meta, done_data, first, minutes),
            failed=per_minute(failed_meta, failed_data, first, minutes),
        )

    async def depth_history(self, minutes: int = 60, now_ms: int | None = None) -> DepthHistory:
        """The depth samples of the last `minutes` minutes (BridgeWorker.sample_depth writes)."""
        now_minute = (now_ms if now_ms is not None else int(time.time() * 1000)) // MINUTE_MS
        first = now_minute - minutes + 1
        flat = await self.client.execute("HGETALL", self.keys[DEPTH_KEY])
        raw = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
        return DepthHistory(
            queue=self.spec.name,
            minutes=[(first + i) * MINUTE_MS for i in range(minutes)],
            samples=depth_samples(raw, first * MINUTE_MS, now_minute * MINUTE_MS),
        )

    async def processing_times(
        self, window_seconds: float = 3600, limit: int = TIMED_JOBS
    ) -> ProcessingTimes:
        """Percentiles of how long the newest completed jobs of the window ran."""
        since = int((time.time() - window_seconds) * 1000)
        ids = await self.client.execute(
            "ZREVRANGEBYSCORE", self.keys["completed"], "+inf", since, "LIMIT", 0, limit
        )
        rows = await self.client.pipeline(
            [["HMGET", self.keys.job(str(i)), "processedOn", "finishedOn"] for i in ids]
        ) if ids else []  # fmt: skip
        took = sorted(
            int(end) - int(start) for start, end in rows if start and end and int(end) >= int(start)
        )
        return ProcessingTimes(
            queue=self.spec.name,
            jobs=len(took),
            percentiles={p: percentile(took, p) for p in PERCENTILES} if took else {},
            max_ms=took[-1] if took else 0,
        )

    async def job(self, job_id: str, *, with_logs: bool = True) -> JobInfo:
        """One job with its state, progress and (optionally) its log lines."""
        job = await self.queue.getJob(job_id)
        if job is None:
            raise UnknownJobError(self.spec.name, job_id)
        state = await self.queue.getJobState(job_id)
        logs: list[str] = []
        if with_logs:
            found = await self.queue.getJobLogs(job_id)
            logs = [str(line) for line in found.get("logs", [])]
        return JobInfo(
            id=str(job.id),
            name=job.name,
            queue=self.spec.name,
            state=str(state),
            data=job.data,
            attempts_made=int(job.attemptsMade or 0),
            failed_reason=job.failedReason or "",
            progress=job.progress,
            timestamp=int(job.timestamp or 0),
            processed_on=int(job.processedOn or 0),
            finished_on=int(job.finishedOn or 0),
            logs=logs,
        )

    async def failed(self, limit: int = 50) -> list[JobInfo]:
        """Failed jobs, most recent first, with reason, attempts and data (BullMQ getFailed)."""
        jobs = await self.queue.getFailed(0, max(0, limit - 1))
        return [
            JobInfo(
                id=str(j.id), name=j.name, queue=self.spec.name, state="failed", data=j.data,
                attempts_made=int(j.attemptsMade or 0), failed_reason=j.failedReason or "",
                progress=j.progress, timestamp=int(j.timestamp or 0),
                processed_on=int(j.processedOn or 0), finished_on=int(j.finishedOn or 0),
            )
            for j in jobs
            if j is not None
        ]  # fmt: skip

    async def retry(self, job_id: str) -> str:
        """Move one failed job back to wait; a dead-lettered one leaves the DLQ as it goes."""
        await self.dlq.prune(job_id)
        if await self.client.execute("ZSCORE", self.dlq.index_key, job_id) is not None:
            return await self.dlq.redrive(job_id)
        job = await self.queue.getJob(job_id)
        if job is None:
            raise UnknownJobError(self.spec.name, job_id)
        state = str(await self.queue.getJobState(job_id))
        if state != "failed":
            raise JobNotRetryableError(self.spec.name, job_id, state)
        await job.retry("failed", {"resetAttemptsMade": True, "resetAttemptsStarted": True})
        return job_id

    async def retry_all(self) -> list[str]:
        """Retry every failed job; returns their ids."""
        ids = await self.client.execute("ZRANGE", self.keys["failed"], 0, -1)
        return [await self.retry(job_id) for job_id in ids]

    async def clean(self, state: str, older_than_seconds: float, limit: int = 0) -> list[str]:
        """Remove jobs in `state` finished longer ago than the grace (BullMQ Queue.clean)."""
        grace_ms = int(older_than_seconds * 1000)
        name = clean_set(state)
        keys = [self.keys[name], self.keys["events"], self.keys["repeat"],
                self.dlq.entries_key, self.dlq.detached_key]  # fmt: skip
        args: list[Arg] = [self.keys.base, int(time.time() * 1000) - grace_ms, limit, name]
        return [str(i) for i in await self.client.run(clean_script(), keys, args)]

    async def pause(self) -> None:
        """Pause the queue for every worker (Node and Python); active jobs finish."""
        await self.queue.pause()

    async def resume(self) -> None:
        """Resume a paused queue."""
        await self.queue.resume()

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered jobs, oldest failure first."""
        return await self.dlq.list(0, limit)


def queue_admins(specs: dict[str, QueueSpec], redis_url: str) -> dict[str, QueueAdmin]:
    """One admin per queue, by name."""
    return {name: QueueAdmin(spec, redis_url) for name, spec in specs.items()}


def find_spec(specs: dict[str, QueueSpec], name: str) -> QueueSpec:
    """A queue by full name or unique prefix ("email" → email-queue)."""
    if name in specs:
        return specs[name]
    matches = [n for n in specs if n.startswith(name)]
    if len(matches) == 1:
        return specs[matches[0]]
    raise UnknownQueueError(name, sorted(specs))
