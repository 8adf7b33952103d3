"""Temporal task queues as operators see them: backlog and pollers, from DescribeTaskQueue.

The legacy describe mode with `report_stats` gives the approximate backlog (count, age, add and
dispatch rates) and the pollers of the last minutes; the dev server (Server 1.32) answers it, and
the "enhanced" mode adds nothing here for unversioned workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from orderflow.errors import OrderflowError

TASK_TYPES = {  # what polls each kind of task
    "workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
}
DESCRIBE_TIMEOUT_SECONDS = 5.0  # a page or a shell command waits no longer for Temporal


class TaskQueueUnavailableError(OrderflowError):
    """Temporal did not describe a task queue."""

    def __init__(self, task_queue: str, reason: str) -> None:
        super().__init__(f"task queue {task_queue!r}: Temporal did not answer: {reason}")
        self.task_queue = task_queue


@dataclass(frozen=True)
class TaskQueueState:
    """One task queue and task type: its backlog and who polls it."""

    task_queue: str
    type: str  # "workflow" or "activity"
    backlog: int  # approximate count of tasks waiting for a poller
    backlog_age_seconds: float  # how long the oldest of them has waited
    add_rate: float  # tasks added per second, recently
    dispatch_rate: float  # tasks handed to pollers per second, recently
    pollers: int
    poller_identities: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json and templates."""
        return asdict(self)


async def describe_task_queue(client: Client, task_queue: str, kind: str) -> TaskQueueState:
    """Backlog and pollers of one task queue's workflow or activity tasks."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
        task_queue_type=TASK_TYPES[kind],
        report_stats=True,
    )
    try:
        answer = await client.workflow_service.describe_task_queue(
            request, timeout=timedelta(seconds=DESCRIBE_TIMEOUT_SECONDS)
        )
    except RPCError as err:
        raise TaskQueueUnavailableError(task_queue, err.message) from err
    stats = answer.stats
    return TaskQueueState(
        task_queue=task_queue,
        type=kind,
        backlog=int(stats.approximate_backlog_count),
        backlog_age_seconds=stats.approximate_backlog_age.ToTimedelta().total_seconds(),
        add_rate=round(stats.tasks_add_rate, 2),
        dispatch_rate=round(stats.tasks_dispatch_rate, 2),
        pollers=len(answer.pollers),
        poller_identities=sorted(p.identity for p in answer.pollers),
    )


async def describe_task_queues(client: Client, task_queues: Sequence[str]) -> list[TaskQueueState]:
    """Every queue's workflow and activity tasks, asked at once."""
    return list(
        await asyncio.gather(
            *(describe_task_queue(client, q, kind) for q in task_queues for kind in TASK_TYPES)
        )
    )
