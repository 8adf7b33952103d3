"""What a failed attempt leads to: a retry now, a retry after a backoff, or the dead-letter queue.

Pure computation (as bullmq's `backoffs.py`), apart from awaiting a custom backoff strategy;
bridge/runtime.py runs the script the outcome calls for (bridge/scripts.py builds it).
"""

from __future__ import annotations

import inspect
import json
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bullmq import UnrecoverableError

from bridge.job import Job

BackoffStrategy = Callable[[int, str | None, BaseException, Job], int | Awaitable[int]]
"""A worker's delay in ms for a backoff type of its own: (attempts made, type, error, job).

A negative delay means do not retry (the job is dead-lettered)."""

STACKTRACE_KEEP = 10  # stack traces a job keeps, one per failed attempt (Node's stackTraceLimit)


@dataclass(frozen=True)
class Failure:
    """One failed attempt and what comes of it."""

    reason: str
    """The job's failedReason: the error's message (its type's name if it has none)."""
    stack: list[str]
    """The job's stack traces, this attempt's last (at most STACKTRACE_KEEP)."""
    final: bool
    """No attempt follows: the job moves to failed and to the dead-letter queue."""
    delay_ms: int = 0
    """How long the job waits in delayed before its next attempt (0: back to wait now)."""

    @property
    def fields(self) -> dict[str, str]:
        """The job hash fields a failure writes (failedReason, stacktrace)."""
        return {"failedReason": self.reason, "stacktrace": json.dumps(self.stack)}


def attempt_failed(job: Job, err: BaseException) -> Failure:
    """The failure of `job`'s current attempt with `err`, before any backoff is computed."""
    stack = [*job.previous_stacktrace(), "".join(traceback.format_exception(err))]
    final = isinstance(err, UnrecoverableError) or job.attempts_made + 1 >= job.attempts
    return Failure(str(err) or type(err).__name__, stack[-STACKTRACE_KEEP:], final)


def builtin_delay(backoff: Any, attempt: int) -> int | None:
    """BullMQ's built-in backoffs: the ms to wait after failed attempt number `attempt` (from 1).

    Args:
        backoff: The job's `backoff` option: a number (a fixed delay), a mapping with a `type`
            and a `delay`, or nothing.
        attempt: How many attempts have failed, this one included.

    Returns:
        The delay in ms (0 without a backoff), or None for a type only a strategy knows.
    """
    if isinstance(backoff, int | float):
        backoff = {"type": "fixed", "delay": backoff}
    if not backoff:
        return 0
    kind, base = backoff.get("type"), int(backoff.get("delay") or 0)
    if kind == "fixed":
        return base
    if kind == "exponential":
        return round(2 ** (attempt - 1) * base)
    return None


async def retry_delay(
    job: Job, err: BaseException, strategy: BackoffStrategy | None
) -> tuple[int, str]:
    """The delay in ms before the job's next attempt, and why there is none (negative delay)."""
    backoff = job.opts.get("backoff")
    made = job.attempts_made + 1
    delay = builtin_delay(backoff, made)
    if delay is not None:
        return delay, ""
    kind = backoff.get("type") if isinstance(backoff, Mapping) else None
    if strategy is None:
        return -1, f"no backoff strategy for type {kind!r}"
    value = strategy(made, kind, err, job)
    if inspect.isawaitable(value):
        value = await value
    return int(value), ""


def after_backoff(failure: Failure, delay_ms: int, why: str = "") -> Failure:
    """`failure` with its backoff: a negative delay makes it final, `why` added to its reason."""
    if delay_ms >= 0:
        return replace(failure, delay_ms=delay_ms)
    reason = f"{failure.reason} ({why})" if why else failure.reason
    return replace(failure, final=True, reason=reason)


async def decide(job: Job, err: BaseException, strategy: BackoffStrategy | None) -> Failure:
    """What `job`'s failed attempt leads to: dead-lettered, or retried now or after a delay."""
    failure = attempt_failed(job, err)
    if failure.final:
        return failure
    delay, why = await retry_delay(job, err, strategy)
    return after_backoff(failure, delay, why)


def dead_letter_entry(
    job: Job, queue: str, failure: Failure, err: BaseException, now_ms: int
) -> str:
    """The JSON the dead-letter queue keeps for a job that failed for good (bridge/dlq.py)."""
    return json.dumps(
        {
            "id": job.id,
            "name": job.name,
            "queue": queue,
            "data": job.data,
            "opts": job.opts,
            "failedReason": failure.reason,
            "attemptsMade": job.attempts_made + 1,
            "stacktrace": failure.stack,
            "failedAt": now_ms,
            "unrecoverable": isinstance(err, UnrecoverableError),
        },
        default=str,
    )
