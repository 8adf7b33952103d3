"""Queue cleanup: the scheduled clean of old failed bridge jobs (seed: clean(7 days, 'failed'))."""

from __future__ import annotations

from dataclasses import dataclass, field

QUEUE_CLEANUP_SCHEDULE_ID = "queue-cleanup"


@dataclass
class QueueCleanupInput:
    """Remove jobs in `state` that finished more than `older_than_seconds` ago, on every queue."""

    older_than_seconds: float
    state: str = "failed"


@dataclass
class QueueCleanupResult:
    """Job ids removed, per queue."""

    removed: dict[str, list[str]] = field(default_factory=dict)
