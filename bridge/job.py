"""The job a bridge processor receives, read straight from BullMQ's job hash."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.runtime import BridgeWorker


@dataclass(eq=False)
class Job:
    """One attempt of a job: its id, name, data and options, plus progress and log writers."""

    id: str
    name: str
    data: Any
    opts: dict[str, Any]
    attempts_made: int  # attempts finished before this one
    timestamp: int
    token: str
    queue: str
    deferred_failure: str | None = None
    malformed: str | None = None
    stacktrace_json: str = "[]"
    worker: BridgeWorker | None = field(default=None, repr=False)

    @property
    def attempts(self) -> int:
        """How many attempts the job may have in all (BullMQ: 0 means 1)."""
        return max(1, int(self.opts.get("attempts") or 1))

    def previous_stacktrace(self) -> list[str]:
        """Stack traces of earlier failed attempts (BullMQ keeps them on the job)."""
        try:
            stack = json.loads(self.stacktrace_json)
        except ValueError:
            return []
        return [str(s) for s in stack] if isinstance(stack, list) else []

    async def update_progress(self, progress: int | float | dict[str, Any]) -> None:
        """Store progress (a number or an object) where BullMQ readers see it."""
        assert self.worker is not None
        await self.worker.update_progress(self, progress)

    async def log(self, row: str) -> None:
        """Append a line to the job's BullMQ log."""
        assert self.worker is not None
        await self.worker.add_log(self, row)


Processor = Callable[[Job], Awaitable[Any]]


def job_from_hash(
    fields: list[str], job_id: str, token: str, queue: str, worker: BridgeWorker
) -> Job:
    """Build a Job from HGETALL's flat [field, value, ...] reply; unreadable data marks it malformed."""
    it = iter(fields)
    raw = dict(zip(it, it, strict=True))
    malformed = None
    try:
        data = json.loads(raw.get("data") or "null")
    except ValueError as err:
        data, malformed = raw.get("data"), f"data is not JSON ({err})"
    try:
        opts = json.loads(raw.get("opts") or "{}")
        if not isinstance(opts, dict):
            raise ValueError("opts is not an object")
    except ValueError as err:
        opts, malformed = {}, malformed or f"opts are not a JSON object ({err})"
    return Job(
        id=job_id,
        name=raw.get("name", ""),
        data=data,
        opts=opts,
        attempts_made=int(raw.get("atm") or raw.get("attemptsMade") or 0),
        timestamp=int(raw.get("timestamp") or 0),
        token=token,
        queue=queue,
        deferred_failure=raw.get("defa"),
        malformed=malformed,
        stacktrace_json=raw.get("stacktrace") or "[]",
        worker=worker,
    )
