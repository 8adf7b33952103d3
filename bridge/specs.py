"""What a bridge queue's producers and workers agree on, and the numbers every queue shares.

Which queues there are is declared by their domains (workers/queues.py), not here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from orderflow.settings import QueueSettings, Settings

DLQ_SUFFIX = "-dlq"  # a sibling namespace under the prefix, so obliterating a queue keeps its DLQ

# seed "Auto-Delete Completed Jobs": keep a day or the last 1000 completed jobs for inspection
KEEP_COMPLETED: dict[str, int] = {"age": 86400, "count": 1000}
KEEP_FAILED: bool | dict[str, int] = False  # seed: failed jobs stay until someone looks at them
LOCK_DURATION_MS = 30_000  # BullMQ's default: a job whose lock is not renewed for 30 s has stalled
STALLED_INTERVAL_MS = 30_000  # BullMQ's default stalled-job check period
MAX_STALLED_COUNT = 1  # BullMQ's default: a job that stalls twice (e.g. it crashes workers) fails
DRAIN_BLOCK_SECONDS = 5.0  # BullMQ's drainDelay: how long an idle worker blocks on the marker
# BullMQ's per-minute completed/failed counts (Worker `metrics: {maxDataPoints}`), read by Node's
# getMetrics and the /ops charts; BullMQ's docs suggest MetricsTime.ONE_WEEK * 2 minutes
METRICS_MAX_DATA_POINTS = 2 * 7 * 24 * 60


@dataclass(frozen=True)
class RateLimit:
    """At most `max` job starts in any window of `duration_ms` (a sliding window)."""

    max: int
    duration_ms: int


@dataclass(frozen=True)
class QueueSpec:
    """Everything a producer and a worker of one queue agree on."""

    name: str
    job_names: tuple[str, ...]
    concurrency: int
    attempts: int
    backoff: dict[str, Any]
    rate_limit: RateLimit | None
    timeout_seconds: float | None
    prefix: str = "bull"
    remove_on_complete: bool | int | dict[str, int] = field(default_factory=lambda: KEEP_COMPLETED)
    remove_on_fail: bool | int | dict[str, int] = KEEP_FAILED
    max_payload_bytes: int = 64 * 1024
    # job-data fields its producers generate (ids, SKUs, amounts: "data.items[].sku"); the
    # payload guard screens them by name only, every other field as free text (bridge/guard.py)
    system_fields: frozenset[str] = frozenset()
    lock_duration_ms: int = LOCK_DURATION_MS
    stalled_interval_ms: int = STALLED_INTERVAL_MS
    max_stalled_count: int = MAX_STALLED_COUNT
    drain_block_seconds: float = DRAIN_BLOCK_SECONDS
    metrics_max_data_points: int = METRICS_MAX_DATA_POINTS  # 0: write no metrics

    @property
    def dlq(self) -> str:
        """The dead-letter queue's name."""
        return self.name + DLQ_SUFFIX

    @property
    def dlq_keys(self) -> tuple[str, str, str]:
        """The DLQ's keys: entries (hash id -> JSON), index (zset by failure time), and detached
        (set of ids whose failed job was removed while still failed: retention, removeOnFail)."""
        base = f"{self.prefix}:{self.dlq}"
        return f"{base}:jobs", f"{base}:index", f"{base}:detached"

    def job_defaults(self) -> dict[str, Any]:
        """BullMQ job options every job of this queue gets unless `add` overrides them."""
        return {
            "attempts": self.attempts,
            "backoff": dict(self.backoff),
            "removeOnComplete": self.remove_on_complete,
            "removeOnFail": self.remove_on_fail,
        }

    def with_(self, **changes: Any) -> QueueSpec:
        """A copy with some fields changed (tests use their own queue names and short timings)."""
        return replace(self, **changes)


def configured_spec(
    name: str,
    job_names: Iterable[str],
    queue: QueueSettings,
    settings: Settings,
    *,
    system_fields: frozenset[str] = frozenset(),
) -> QueueSpec:
    """The spec of one queue from its settings group and the settings every queue shares.

    Args:
        name: The queue's name (its domain's contract holds it).
        job_names: The job names its producers add and its processor takes.
        queue: Its numbers: concurrency, attempts, exponential backoff, limiter, timeout.
        settings: The key prefix and the payload limit every queue shares.
        system_fields: Job-data fields its producers generate (bridge/guard.py).

    Returns:
        The spec its producers and workers agree on.
    """
    rate_limit = (
        None if queue.rate_max is None else RateLimit(queue.rate_max, queue.rate_duration_ms)
    )
    return QueueSpec(
        name=name,
        job_names=tuple(job_names),
        concurrency=queue.concurrency,
        attempts=queue.attempts,
        backoff={"type": "exponential", "delay": queue.backoff_ms},
        rate_limit=rate_limit,
        timeout_seconds=queue.timeout_seconds,
        prefix=settings.queue_prefix,
        max_payload_bytes=settings.job_max_payload_bytes,
        system_fields=system_fields,
    )
