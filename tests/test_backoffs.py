"""What a failed bridge attempt leads to (bridge/backoffs.py): plain unit tests, no Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from bullmq import UnrecoverableError

from bridge.backoffs import (
    STACKTRACE_KEEP,
    Failure,
    after_backoff,
    attempt_failed,
    builtin_delay,
    dead_letter_entry,
    decide,
    retry_delay,
)
from bridge.errors import MalformedJobError
from bridge.job import Job


def job(attempts_made: int = 0, stack: list[str] | None = None, **opts: Any) -> Job:
    return Job(
        id="j1",
        name="send-welcome",
        data={"to": "a@example.com"},
        opts=opts,
        attempts_made=attempts_made,
        timestamp=1,
        token="t:1",
        queue="q",
        stacktrace_json=json.dumps(stack or []),
    )


def raised(err: BaseException) -> BaseException:
    """`err` with a traceback, as a processor's error arrives."""
    try:
        raise err
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("backoff", "attempt", "delay"),
    [
        (None, 1, 0),
        ({}, 3, 0),
        (250, 4, 250),  # a number is a fixed delay
        ({"type": "fixed", "delay": 100}, 1, 100),
        ({"type": "fixed", "delay": 100}, 5, 100),
        ({"type": "fixed"}, 2, 0),
        ({"type": "exponential", "delay": 100}, 1, 100),
        ({"type": "exponential", "delay": 100}, 2, 200),
        ({"type": "exponential", "delay": 100}, 4, 800),
        ({"type": "exponential", "delay": 3}, 2, 6),
        ({"type": "jitter", "delay": 100}, 1, None),  # only a strategy knows
    ],
)
def test_builtin_delays_are_bullmqs(backoff: Any, attempt: int, delay: int | None) -> None:
    assert builtin_delay(backoff, attempt) == delay


def test_an_attempt_left_is_not_final_the_last_one_is() -> None:
    err = raised(ValueError("smtp down"))
    assert not attempt_failed(job(attempts_made=0, attempts=3), err).final
    assert not attempt_failed(job(attempts_made=1, attempts=3), err).final
    assert attempt_failed(job(attempts_made=2, attempts=3), err).final
    assert attempt_failed(job(attempts_made=0), err).final  # no attempts option: one attempt


def test_an_unrecoverable_error_is_final_with_attempts_left() -> None:
    failure = attempt_failed(job(attempts=5), raised(UnrecoverableError("bad address")))
    assert failure.final and failure.reason == "bad address"
    malformed = MalformedJobError("q", "send-welcome", "j1", "data is not JSON")
    assert attempt_failed(job(attempts=5), raised(malformed)).final


def test_the_reason_is_the_message_or_the_type() -> None:
    assert attempt_failed(job(), raised(ValueError("boom"))).reason == "boom"
    assert attempt_failed(job(), raised(TimeoutError())).reason == "TimeoutError"


def test_stack_traces_accumulate_up_to_the_limit() -> None:
    previous = [f"trace {i}" for i in range(STACKTRACE_KEEP)]
    failure = attempt_failed(job(stack=previous, attempts=20), raised(ValueError("boom")))
    assert len(failure.stack) == STACKTRACE_KEEP
    assert failure.stack[0] == "trace 1"
    assert failure.stack[-1].startswith("Traceback") and "ValueError: boom" in failure.stack[-1]
    assert json.loads(failure.fields["stacktrace"]) == failure.stack
    assert failure.fields["failedReason"] == "boom"


def test_a_negative_delay_makes_the_failure_final_and_says_why() -> None:
    failure = Failure("boom", [], final=False)
    assert after_backoff(failure, 300) == Failure("boom", [], final=False, delay_ms=300)
    assert after_backoff(failure, 0) == failure
    refused = after_backoff(failure, -1, "no backoff strategy for type 'jitter'")
    assert refused.final and refused.reason == "boom (no backoff strategy for type 'jitter')"
    assert refused.fields["failedReason"] == refused.reason
    assert after_backoff(failure, -1).reason == "boom"  # a strategy's -1 needs no reason


async def test_a_custom_type_asks_the_strategy_sync_or_async() -> None:
    calls: list[tuple[int, str | None, str]] = []

    def strategy(made: int, kind: str | None, err: BaseException, j: Job) -> int:
        calls.append((made, kind, str(err)))
        return 1000 * made

    async def later(made: int, kind: str | None, err: BaseException, j: Job) -> int:
        return 7

    custom = job(attempts_made=1, backoff={"type": "jitter", "delay": 5})
    err = raised(ValueError("boom"))
    assert await retry_delay(custom, err, strategy) == (2000, "")
    assert calls == [(2, "jitter", "boom")]
    assert await retry_delay(custom, err, later) == (7, "")
    assert await retry_delay(custom, err, None) == (-1, "no backoff strategy for type 'jitter'")
    assert await retry_delay(job(backoff=40), err, None) == (40, "")


async def test_decide_never_asks_the_strategy_of_a_final_failure() -> None:
    def strategy(made: int, kind: str | None, err: BaseException, j: Job) -> int:
        raise AssertionError("asked")

    last = job(attempts_made=2, attempts=3, backoff={"type": "jitter"})
    assert (await decide(last, raised(ValueError("x")), strategy)).final
    exponential = job(attempts=3, backoff={"type": "exponential", "delay": 50})
    retried = await decide(exponential, raised(ValueError("x")), None)
    assert not retried.final and retried.delay_ms == 50
    jitter = job(attempts=3, backoff={"type": "jitter"})
    refused = await decide(jitter, raised(ValueError("x")), None)
    assert refused.final and refused.reason == "x (no backoff strategy for type 'jitter')"


def test_the_dead_letter_entry_holds_what_a_redrive_needs() -> None:
    err = raised(UnrecoverableError("bad address"))
    dead = job(attempts_made=1, attempts=2, backoff=5)
    failure = attempt_failed(dead, err)
    entry = json.loads(dead_letter_entry(dead, "email-queue", failure, err, 1_790_000_000_000))
    assert entry == {
        "id": "j1",
        "name": "send-welcome",
        "queue": "email-queue",
        "data": {"to": "a@example.com"},
        "opts": {"attempts": 2, "backoff": 5},
        "failedReason": "bad address",
        "attemptsMade": 2,
        "stacktrace": failure.stack,
        "failedAt": 1_790_000_000_000,
        "unrecoverable": True,
    }
