"""Errors the bridge raises; each names the queue, job name and job id involved."""

from __future__ import annotations

from bullmq import UnrecoverableError

from orderflow.errors import OrderflowError

SHOWN_CHARS = 100  # of a name or field taken from job data, in an error message


def shown(text: str) -> str:
    """Text from a job as an error shows it: as written if printable, else escaped (repr)."""
    cut = text[:SHOWN_CHARS]
    return cut if cut.isprintable() else repr(cut)


class PayloadRejectedError(OrderflowError):
    """A job's data was refused before it reached Redis (sensitive field or too large).

    `field` is the refused field's path ("data.reason"), "" when the whole payload was;
    `problem` what it looked like ("its value looks like a card number ...").
    """

    def __init__(
        self,
        queue: str,
        name: str,
        job_id: str | None,
        reason: str,
        *,
        field: str = "",
        problem: str = "",
    ) -> None:
        where = f"job {job_id!r} ({shown(name)})" if job_id else f"job {shown(name)}"
        super().__init__(f"{queue}: {where} refused: {reason}")
        self.queue, self.name, self.job_id, self.reason = queue, name, job_id, reason
        self.field, self.problem = field, problem


class InvalidJobOptionsError(OrderflowError):
    """`add` was called with options BullMQ would refuse."""


class JobTimeoutError(OrderflowError):
    """A job ran longer than its queue's timeout; the attempt fails and may be retried."""

    def __init__(self, queue: str, name: str, job_id: str, seconds: float) -> None:
        super().__init__(f"{queue}: job {job_id!r} ({shown(name)}) timed out after {seconds:g}s")
        self.job_id = job_id


class MalformedJobError(UnrecoverableError, OrderflowError):
    """A job whose data cannot be processed at all; it is not retried and goes to the DLQ."""

    def __init__(self, queue: str, name: str, job_id: str, reason: str) -> None:
        super().__init__(f"{queue}: malformed job {job_id!r} ({shown(name)}): {reason}")
        self.job_id = job_id


class UnknownDeadLetterError(OrderflowError):
    """No entry with this job id is in the dead-letter queue."""

    def __init__(self, dlq: str, job_id: str) -> None:
        super().__init__(f"{dlq}: no dead-lettered job {job_id!r}")
        self.job_id = job_id


class RetryLater(Exception):
    """Run this job again after `delay_ms`, without counting an attempt.

    For an outage of something the job needs (BullMQ's `moveToDelayed` + `DelayedError`): the
    job waits it out in the delayed set instead of using up its attempts.
    """

    def __init__(self, delay_ms: int, reason: str) -> None:
        super().__init__(reason)
        self.delay_ms = max(1, int(delay_ms))
