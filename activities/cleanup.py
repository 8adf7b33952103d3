"""Queue cleanup activity: clean old jobs off every bridge queue."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity

from bridge.admin import QueueAdmin
from bridge.specs import QueueSpec
from orderflow.contracts.cleanup import QueueCleanupInput, QueueCleanupResult


class CleanupActivities:
    """Works on the bridge queues it is given (every queue, from the settings, in production)."""

    def __init__(self, specs: Mapping[str, QueueSpec], redis_url: str) -> None:
        self.specs = dict(specs)
        self.redis_url = redis_url

    @activity.defn
    async def clean_queues(self, data: QueueCleanupInput) -> QueueCleanupResult:
        """BullMQ Queue.clean(grace, 0, state) on every queue; the DLQ entries stay for review."""
        removed: dict[str, list[str]] = {}
        for name, spec in self.specs.items():
            admin = QueueAdmin(spec, self.redis_url)
            try:
                removed[name] = await admin.clean(data.state, data.older_than_seconds)
            finally:
                await admin.close()
            if removed[name]:
                activity.logger.info("%s: cleaned %d %s jobs", name, len(removed[name]), data.state)
        return QueueCleanupResult(removed=removed)
