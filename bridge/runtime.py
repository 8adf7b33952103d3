"""BridgeWorker: the worker runtime of every bridge queue, on BullMQ's own Lua scripts.

Each of `concurrency` slots completes a job and fetches the next one in the same
moveToFinished call (as Node BullMQ does), over one pipelined connection. On top of the
scripts: BullMQ's queue rate limiter (shared with Node workers), a per-job timeout, custom
backoff, a dead-letter queue, lock renewal and stalled-job recovery, and a graceful shutdown
that hands unfinished jobs back to the queue.

This module decides *when*; the rest is split by concern, as bullmq's Python port splits its
worker: bridge/scripts.py builds every script call's keys and args (`WorkerScripts`),
bridge/liveness.py renews locks, checks for stalled jobs and reclaims dead workers' jobs
(`Liveness`), and bridge/backoffs.py decides what a failed attempt leads to.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import time
import uuid
from typing import Any

from bullmq import UnrecoverableError

from bridge import backoffs
from bridge.backoffs import BackoffStrategy, Failure
from bridge.connect import redis_client
from bridge.errors import JobTimeoutError, MalformedJobError, RetryLater
from bridge.job import Job, Processor, job_from_hash
from bridge.liveness import REDIS_FAILURES, Backoff, Liveness, RedisState
from bridge.redis_client import RedisReplyError
from bridge.scripts import Call, WorkerScripts
from bridge.specs import QueueSpec
from bridge.tracing import InstrumentedProcessor

__all__ = ["BackoffStrategy", "BridgeWorker"]

log = logging.getLogger("orderflow.bridge")

DEPTH_SAMPLE_SECONDS = 60.0  # each worker records its queue's depth this often (one per minute)


def _rate_limited(raw: Any) -> bool:
    """True if a fetch's reply says the queue's rate limit is used up (BullMQ's limit delay)."""
    return isinstance(raw, list) and len(raw) >= 4 and not raw[0] and int(raw[2] or 0) > 0


def node_worker_prefix(spec: QueueSpec) -> str:
    """`<prefix>:<base64 queue name>:w:`, how Node BullMQ's getWorkers finds a queue's workers."""
    return f"{spec.prefix}:{base64.b64encode(spec.name.encode()).decode()}:w:"


class BridgeWorker:
    """Consumes one queue with a processor until stopped; see the module docstring.

    Args:
        spec: The queue and its worker options (concurrency, rate limit, timeout, locks).
        processor: Runs one attempt of a job; what it returns is the job's return value,
            what it raises fails the attempt (RetryLater delays the job without counting it,
            UnrecoverableError fails it for good).
        redis_url: The Redis server, as `redis://` or `rediss://` URL.
        backoff_strategy: The delay for backoff types other than fixed and exponential; a job
            with such a type and no strategy is dead-lettered at its first failure.
        name: The worker's name in logs and in Node BullMQ's worker list (default: queue name
            and the start of the worker's id).
        depth_every: How often, in seconds, the worker records its queue's depth.
    """

    def __init__(
        self,
        spec: QueueSpec,
        processor: Processor,
        redis_url: str,
        *,
        backoff_strategy: BackoffStrategy | None = None,
        name: str = "",
        depth_every: float = DEPTH_SAMPLE_SECONDS,
    ) -> None:
        self.spec = spec
        self.processor = InstrumentedProcessor(processor)  # span + metrics per attempt
        self.backoff_strategy = backoff_strategy
        self.id = uuid.uuid4().hex
        self.name = name or f"orderflow:{spec.name}:{self.id[:8]}"
        # the full id in the connection names lets other workers see this one is alive; the main
        # one is named as Node BullMQ names a worker's, so Node tools (getWorkers, bull-board) list it
        self.client = redis_client(
            redis_url, name=f"{node_worker_prefix(spec)}{self.name}:{self.id}", prefix=spec.prefix
        )
        self.blocking = redis_client(
            redis_url, name=f"{self.name}:{self.id}:blocking", prefix=spec.prefix
        )
        self.scripts = WorkerScripts(self.client, spec, self.name)
        self.keys = self.scripts.keys
        self.processed = 0
        self.failed = 0
        self._tokens = itertools.count(1)
        self._active: dict[str, Job] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._stopping = False
        self._abandoning = False
        self._wakeup: asyncio.Future[None] | None = None
        self._idle = 0
        self._idle_event = asyncio.Event()
        self._block_until = 0
        self.redis = RedisState(self.name)
        self.liveness = Liveness(
            self.client,
            self.scripts,
            self.id,
            redis=self.redis,
            active=self._active,
            stopping=lambda: self._stopping,
            wake=self._wake,
        )
        # tokens of fetches whose reply was lost: the job may sit in active, locked with one
        self._lost_tokens: set[str] = set()
        self.depth_every = depth_every
        # the completion's prepared call and the release script, as tests look for them
        self._complete_call = self.scripts.complete_call
        self._release_script = self.scripts.release_script

    @property
    def reclaim_checks(self) -> int:
        """How many times this worker has looked for dead workers' jobs (tests wait on it)."""
        return self.liveness.reclaim_checks

    # ---- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, grace_seconds: float = 30.0) -> None:
        """Process jobs until `stop` is set, then shut down gracefully.

        Redis failures are ridden out (retried with backoff, forever); a job whose attempt
        fails is retried or dead-lettered as its options say.

        Args:
            stop: Set it to stop fetching; running attempts get `grace_seconds` to finish.
            grace_seconds: How long running attempts may go on after `stop`; those still
                running then are cancelled and their jobs handed back to wait (no attempt
                counted).
        """
        self._wakeup = asyncio.get_running_loop().create_future()
        await self.liveness.connect(stop)
        slots = [asyncio.create_task(self._slot()) for _ in range(self.spec.concurrency)]
        helpers = [
            asyncio.create_task(self._marker_loop()),
            *self.liveness.tasks(),
            asyncio.create_task(  # read by QueueAdmin.depth_history
                self.liveness.repeat(
                    "sampling the queue depth", self.sample_depth, lambda: self.depth_every
                )
            ),
        ]
        await stop.wait()
        self._stopping = True
        self._wake()
        self._idle_event.set()
        _done, pending = await asyncio.wait(slots, timeout=grace_seconds)
        if pending:
            self._abandoning = True
            for task in list(self._tasks.values()):
                task.cancel()
            await asyncio.wait(pending, timeout=max(5.0, self.spec.lock_duration_ms / 1000))
        for task in helpers + [t for t in slots if not t.done()]:
            task.cancel()
        await asyncio.gather(*helpers, *slots, return_exceptions=True)
        await self.liveness.clear_heartbeat()
        await self.blocking.close()
        await self.client.close()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        self._wakeup = asyncio.get_running_loop().create_future()

    async def _slot(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        fetched: list[Any] | None = None
        backoff = Backoff()
        while not self._stopping:
            try:
                if fetched is None:
                    wakeup = self._wakeup
                    if self._lost_tokens:
                        await self._recover_lost()
                    fetched = await self._fetch()
                    self.redis.ok()
                    backoff.reset()
                    if fetched is None:
                        await self._wait_idle(wakeup)
                        continue
                job = job_from_hash(fetched[0], fetched[1], fetched[2], self.spec.name, self)
                fetched = await self._handle(job, me)
            except REDIS_FAILURES as err:
                fetched = None
                self.redis.failed(err, "fetching a job")
                await backoff.wait()
            except Exception:
                fetched = None
                log.exception("%s: unexpected error in a worker slot", self.name)
                await backoff.wait()
        if fetched is not None:  # fetched by a finish or fetch that overlapped the stop
            await self._hand_back(
                job_from_hash(fetched[0], fetched[1], fetched[2], self.spec.name, self)
            )

    async def _wait_idle(self, wakeup: asyncio.Future[None] | None) -> None:
        if wakeup is None or wakeup.done():
            return
        self._idle += 1
        self._idle_event.set()
        try:
            await asyncio.shield(wakeup)
        finally:
            self._idle -= 1
            if not self._idle:
                self._idle_event.clear()

    # ---- fetching ------------------------------------------------------------------------

    def _token(self) -> str:
        return f"{self.id}:{next(self._tokens)}"

    async def _fetch(self) -> list[Any] | None:
        token = self._token()
        while True:
            try:
                raw = await self.scripts.fetch(token).run(self.client)
            except (ConnectionError, OSError):
                self._lost_tokens.add(token)  # Redis may have run it: a job may be locked with it
                raise
            fetched = await self._next_from(raw, token)
            # rate limited (it slept out the window): try again rather than wait for a marker
            if fetched is not None or self._stopping or not _rate_limited(raw):
                return fetched

    async def _next_from(self, raw: Any, token: str) -> list[Any] | None:
        """The [fields, id, token] of a fetched job, or None (noting delays and rate limits)."""
        if isinstance(raw, list) and raw and raw[0]:
            return [raw[0], raw[1], token]
        if isinstance(raw, list) and len(raw) >= 4:
            limit_until, delay_until = int(raw[2] or 0), int(raw[3] or 0)
            if limit_until > 0:  # the queue's limiter key is full: ms until its window ends
                await asyncio.sleep(limit_until / 1000)
            if delay_until > 0:
                self._block_until = (
                    min(self._block_until, delay_until) if self._block_until else delay_until
                )
        return None

    async def _marker_loop(self) -> None:
        """Block on BullMQ's marker key while some slot is idle, and wake the idle slots."""
        marker = self.keys["marker"]
        backoff = Backoff()
        while not self._stopping:
            try:
                await self._idle_event.wait()
                if self._stopping:
                    return
                timeout = self.spec.drain_block_seconds
                if self._block_until:
                    timeout = min(
                        timeout, max(0.001, (self._block_until - time.time() * 1000) / 1000)
                    )
                result = await self.blocking.execute("BZPOPMIN", marker, f"{timeout:.3f}")
                self.redis.ok()
                backoff.reset()
                now = time.time() * 1000
                if result and float(result[2]) > now:
                    self._block_until = int(float(result[2]))
                    continue
                if not result and self._block_until and self._block_until > now:
                    continue
                self._block_until = 0
                self._wake()
            except REDIS_FAILURES as err:
                self.redis.failed(err, "waiting for jobs")
                await backoff.wait()
                self._wake()  # idle slots look for themselves: jobs may have come meanwhile
            except Exception:
                log.exception("%s: unexpected error waiting for jobs", self.name)
                await backoff.wait()
                self._wake()

    # ---- processing ----------------------------------------------------------------------

    async def _handle(self, job: Job, slot: asyncio.Task[Any]) -> list[Any] | None:
        """Run one attempt and finish it; returns the next job when the finish fetched one."""
        self._active[job.id] = job
        try:
            if job.malformed:
                raise MalformedJobError(self.spec.name, job.name, job.id, job.malformed)
            if job.deferred_failure:
                raise UnrecoverableError(f"job {job.id!r} ({job.name}): {job.deferred_failure}")
            # the processor runs in this slot's task (no task per job): a shutdown out of grace
            # cancels the slot's task while it is in here
            self._tasks[job.id] = slot
            try:
                timeout = self.spec.timeout_seconds
                if timeout is None:
                    result = await self.processor(job)
                else:
                    try:
                        async with asyncio.timeout(timeout) as within:
                            result = await self.processor(job)
                    except TimeoutError:
                        if not within.expired():
                            raise  # the processor's own
                        raise JobTimeoutError(self.spec.name, job.name, job.id, timeout) from None
            finally:
                self._tasks.pop(job.id, None)
        except asyncio.CancelledError:
            if not self._abandoning:
                raise
            await self._hand_back(job)
            return None
        except RetryLater as err:
            await self._retry_later(job, err)
            return None
        except Exception as err:  # a failed attempt, whatever the processor raised
            await self._fail(job, err)
            return None
        finally:
            self._active.pop(job.id, None)
        return await self._complete(job, result)

    async def _complete(self, job: Job, result: Any) -> list[Any] | None:
        fetch_next = not self._stopping
        value = "null" if result is None else json.dumps(result, separators=(",", ":"), default=str)
        raw = await self._run_finish(self.scripts.complete(job, value, fetch_next), job)
        self.processed += 1
        if not fetch_next:
            return None
        return await self._next_from(raw, job.token)

    async def _run_finish(self, call: Call, job: Job) -> Any:
        # The attempt's outcome is known: keep trying to record it while the job's lock can
        # still be ours, so a Redis blip does not make the job run again.
        deadline = time.monotonic() + self.spec.lock_duration_ms / 1000
        backoff = Backoff()
        while True:
            try:
                raw = await call.run(self.client)
                self.redis.ok()
                break
            except REDIS_FAILURES as err:
                if not isinstance(err, RedisReplyError):  # it may have run, fetching a job
                    self._lost_tokens.add(job.token)
                self.redis.failed(err, f"finishing job {job.id!r}")
                if self._abandoning or time.monotonic() + backoff.delay > deadline:
                    raise
                await backoff.wait()
        if isinstance(raw, int) and raw < 0:
            log.warning(
                "%s: job %r (%s) could not be finished (BullMQ code %s); its lock was lost,"
                " so another worker owns it now",
                self.name,
                job.id,
                job.name,
                raw,
            )
            return None
        return raw

    async def _fail(self, job: Job, err: BaseException) -> None:
        self.failed += 1
        failure = await backoffs.decide(job, err, self.backoff_strategy)
        attempt = job.attempts_made + 1
        log.info(
            "%s: job %r (%s) attempt %d failed: %s",
            self.name,
            job.id,
            job.name,
            attempt,
            failure.reason,
        )
        if failure.final:
            await self._dead_letter(job, err, failure)
        elif failure.delay_ms > 0:
            delayed = self.scripts.move_to_delayed(
                job, failure.delay_ms, count_attempt=True, fields=failure.fields
            )
            await self._run_finish(delayed, job)
        else:
            await self._run_finish(self.scripts.retry(job, failure.fields), job)

    async def _retry_later(self, job: Job, err: RetryLater) -> None:
        """Back to the delayed set for `err.delay_ms`, attempts untouched (skip-attempt flag)."""
        log.info(
            "%s: job %r (%s) delayed %d ms, no attempt counted: %s",
            self.name,
            job.id,
            job.name,
            err.delay_ms,
            err,
        )
        delayed = self.scripts.move_to_delayed(job, err.delay_ms, count_attempt=False, fields=None)
        await self._run_finish(delayed, job)

    async def _dead_letter(self, job: Job, err: BaseException, failure: Failure) -> None:
        entry = backoffs.dead_letter_entry(
            job, self.spec.name, failure, err, int(time.time() * 1000)
        )
        call = self.scripts.dead_letter(job, failure.reason, failure.fields, entry)
        await self._run_finish(call, job)
        log.warning(
            "%s: job %r (%s) dead-lettered to %s: %s",
            self.name,
            job.id,
            job.name,
            self.spec.dlq,
            failure.reason,
        )

    async def _recover_lost(self) -> None:
        """Hand back jobs fetched by calls whose reply was lost (Redis restarted meanwhile).

        Without this they would sit in active, locked by this worker, until the lock expires
        and a stalled-job check moves them: a minute late.
        """
        lost, self._lost_tokens = self._lost_tokens, set()
        try:
            locks = await self.liveness.other_locks()
        except BaseException:
            self._lost_tokens |= lost
            raise
        for job_id, token in locks:
            if isinstance(token, str) and token in lost:
                await self._hand_back_id(job_id, token)

    async def _hand_back(self, job: Job) -> None:
        """Shutdown ran out of grace: put the job back in wait, no attempt counted."""
        await self._hand_back_id(job.id, job.token)
        log.warning(
            "%s: job %r (%s) handed back to the queue at shutdown", self.name, job.id, job.name
        )

    async def _hand_back_id(self, job_id: str, token: str) -> None:
        result = await self.scripts.hand_back(job_id, token).run(self.client)
        if not (isinstance(result, int) and result < 0) and not self._stopping:
            log.warning(
                "%s: job %r handed back to wait (its fetch reply was lost)", self.name, job_id
            )
        self._wake()

    # ---- what a processor calls, and the queue depth --------------------------------------

    async def update_progress(self, job: Job, progress: Any) -> None:
        """Store a job's progress where BullMQ readers see it (BullMQ `job.updateProgress`).

        Args:
            job: The job, as the processor received it.
            progress: A number or a JSON-serializable object.

        Raises:
            ConnectionError: Redis could not be reached (not retried: the processor decides).
            RedisReplyError: Redis refused the call, e.g. the job is gone.
        """
        await self.scripts.update_progress(job, progress).run(self.client)

    async def add_log(self, job: Job, row: str) -> None:
        """Append a row to a job's log (BullMQ `job.log`), trimmed to its `keepLogs` option.

        Args:
            job: The job, as the processor received it.
            row: The line to append.

        Raises:
            ConnectionError: Redis could not be reached (not retried: the processor decides).
            RedisReplyError: Redis refused the call, e.g. the job is gone.
        """
        await self.scripts.add_log(job, row).run(self.client)

    async def sample_depth(self, now_ms: int | None = None) -> dict[str, int]:
        """Record the queue's depth for the minute of `now_ms`, in one round trip.

        The minute is the sample's field in `<prefix>:<queue>:orderflow-depth`: every worker of
        the queue samples, and those of one minute leave one sample (the last one written).
        QueueAdmin.depth_history reads them.

        Args:
            now_ms: The time in ms since the epoch (default: now).

        Returns:
            The counts just recorded, by type (waiting, paused, active, delayed, prioritized).

        Raises:
            ConnectionError: Redis could not be reached.
            RedisReplyError: Redis refused the call.
        """
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        sample = await self.scripts.depth_sample(now).run(self.client)
        return {k: int(v) for k, v in json.loads(sample).items()}
