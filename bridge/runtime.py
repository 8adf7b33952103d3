"""BridgeWorker: the worker runtime of every bridge queue, on BullMQ's own Lua scripts.

Each of `concurrency` slots completes a job and fetches the next one in the same
moveToFinished call (as Node BullMQ does), over one pipelined connection. On top of the
scripts: BullMQ's queue rate limiter (shared with Node workers), a per-job timeout, custom backoff, a dead-letter
queue, lock renewal and stalled-job recovery, and a graceful shutdown that hands
unfinished jobs back to the queue.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import json
import logging
import re
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from bullmq import UnrecoverableError

from bridge.errors import JobTimeoutError, MalformedJobError, RetryLater
from bridge.job import Job, Processor, job_from_hash
from bridge.redis_client import Arg, PreparedCall, RedisClient, RedisReplyError, Script
from bridge.scripts import (
    DEPTH_HISTORY_MS,
    Keys,
    bullmq_script,
    complete_script,
    dead_letter_script,
    depth_keys,
    depth_sample_script,
    release_dead_locks_script,
    sliding_limit_script,
)
from bridge.specs import QueueSpec
from bridge.tracing import InstrumentedProcessor

log = logging.getLogger("orderflow.bridge")

BackoffStrategy = Callable[[int, str | None, BaseException, Job], int | Awaitable[int]]

STACKTRACE_KEEP = (
    10  # stack traces kept per job (one per failed attempt), as Node's stackTraceLimit
)
OPTS_CACHE_SIZE = 4096  # packed moveToFinished opts kept (per token and attempt, a few each)
RETRY_FIRST_DELAY = 0.1  # first wait after a Redis failure; doubles up to RETRY_MAX_DELAY ...
RETRY_MAX_DELAY = (
    5.0  # ... so a restarted Redis is used again within seconds (workers retry forever)
)
# Failures a worker rides out: the connection, and error replies of a Redis that is restarting,
# failing over or busy (LOADING, READONLY, NOAUTH after a restart without the password yet,
# BUSY running a script, MASTERDOWN, TRYAGAIN, OOM ...)
REDIS_FAILURES = (ConnectionError, OSError, RedisReplyError)
# Liveness of a worker, so a restarted one takes its dead predecessor's jobs back in seconds
# rather than after lock expiry plus two stalled-job checks (about a minute with the defaults):
HEARTBEAT_SECONDS = 1.0  # each worker refreshes its heartbeat key this often ...
HEARTBEAT_TTL_MS = 5000  # ... and a worker silent this long, with no connection open, is dead
RECLAIM_EVERY_SECONDS = 1.0  # how often a starting worker looks for a dead worker's jobs ...
# ... during its first lock duration (after that, lock expiry and the stalled check take over)
DEPTH_SAMPLE_SECONDS = 60.0  # each worker records its queue's depth this often (one per minute)
MINUTE_MS = 60_000
_OUR_TOKEN = re.compile(r"([0-9a-f]{32}):\d+")  # BridgeWorker lock tokens: worker id, counter


class Backoff:
    """Exponential waits between retries of one loop, reset by a success."""

    def __init__(self) -> None:
        self.delay = RETRY_FIRST_DELAY

    async def wait(self) -> None:
        """Sleep the current delay, then double it (up to RETRY_MAX_DELAY)."""
        await asyncio.sleep(self.delay)
        self.delay = min(RETRY_MAX_DELAY, self.delay * 2)

    def reset(self) -> None:
        """Back to the first delay."""
        self.delay = RETRY_FIRST_DELAY


class RedisState:
    """Redis as one worker sees it; logs one line per change (failing, failing otherwise, back)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.problem: str | None = None
        self.since = 0.0

    def failed(self, err: BaseException, where: str) -> None:
        """Note a failure; logs only when the kind of failure changes."""
        kind = _failure_kind(err)
        if kind == self.problem:
            return
        if self.problem is None:
            self.since = time.monotonic()
        self.problem = kind
        log.warning("%s: redis failing in %s: %s; retrying with backoff (up to %.0fs)",
                    self.name, where, err, RETRY_MAX_DELAY)  # fmt: skip

    def ok(self) -> None:
        """Note a success; logs once when Redis answers again after failures."""
        if self.problem is not None:
            log.warning("%s: redis is back after %.1fs (%s)",
                        self.name, time.monotonic() - self.since, self.problem)  # fmt: skip
            self.problem = None


def _connected(worker_id: str, client_list: str) -> bool:
    """True if CLIENT LIST shows a connection of this worker (named with its id)."""
    short = worker_id[:8]  # names before the full id was added ended in it
    return worker_id in client_list or any(
        f":{short}{end}" in client_list for end in (" ", ":blocking ")
    )


def _failure_kind(err: BaseException) -> str:
    if isinstance(err, RedisReplyError):
        return str(err).split(" ", 1)[0] or "error reply"  # LOADING, READONLY, NOAUTH ...
    return "connection"


def _rate_limited(raw: Any) -> bool:
    """True if a fetch's reply says the queue's rate limit is used up (BullMQ's limit delay)."""
    return isinstance(raw, list) and len(raw) >= 4 and not raw[0] and int(raw[2] or 0) > 0


def node_worker_prefix(spec: QueueSpec) -> str:
    """`<prefix>:<base64 queue name>:w:`, how Node BullMQ's getWorkers finds a queue's workers."""
    return f"{spec.prefix}:{base64.b64encode(spec.name.encode()).decode()}:w:"


def keep_jobs(remove: Any) -> dict[str, Any]:
    """BullMQ's removeOnComplete/removeOnFail as the keepJobs option of moveToFinished."""
    if isinstance(remove, bool) or remove is None:
        return {"count": 0} if remove else {"count": -1}
    if isinstance(remove, int):
        return {"count": remove}
    return dict(remove)


class BridgeWorker:
    """Consumes one queue with a processor until stopped; see the module docstring."""

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
        self.keys = Keys(spec.prefix, spec.name)
        # the full id in the connection names lets other workers see this one is alive; the main
        # one is named as Node BullMQ names a worker's, so Node tools (getWorkers, bull-board) list it
        self.client = RedisClient(
            redis_url, name=f"{node_worker_prefix(spec)}{self.name}:{self.id}"
        )
        self.blocking = RedisClient(redis_url, name=f"{self.name}:{self.id}:blocking")
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
        # tokens of fetches whose reply was lost: the job may sit in active, locked with one
        self._lost_tokens: set[str] = set()
        self.reclaim_checks = 0  # looks for dead workers' jobs so far (tests wait on it)
        self.depth_every = depth_every
        self._prepare_scripts()

    def _prepare_scripts(self) -> None:
        k = self.keys

        def limited(script: Script) -> Script:
            return script if self.spec.rate_limit is None else sliding_limit_script(script)

        # completions also drop the job's DLQ entry, if any (complete_script)
        self._finish_script = self.client.register(limited(complete_script()))
        self._dlq_script = self.client.register(dead_letter_script())
        self._active_script = self.client.register(limited(bullmq_script("moveToActive-11.lua")))
        self._delay_script = self.client.register(bullmq_script("moveToDelayed-11.lua"))
        self._retry_script = self.client.register(bullmq_script("retryJob-11.lua"))
        self._locks_script = self.client.register(bullmq_script("extendLocks-1.lua"))
        self._stalled_script = self.client.register(bullmq_script("moveStalledJobsToWait-9.lua"))
        self._handback_script = self.client.register(bullmq_script("moveJobFromActiveToWait-9.lua"))
        self._progress_script = self.client.register(bullmq_script("updateProgress-3.lua"))
        self._log_script = self.client.register(bullmq_script("addLog-2.lua"))
        self._release_script = self.client.register(release_dead_locks_script())
        self._stalled_keys: list[Arg] = [
            k[n] for n in ("stalled", "wait", "active", "stalled-check", "meta", "paused",
                           "marker", "events", "repeat")
        ]  # fmt: skip
        self._heartbeat_key = k[f"orderflow-alive:{self.id}"]
        self._active_keys: list[Arg] = [
            k[n] for n in ("wait", "active", "prioritized", "events", "stalled", "limiter",
                           "delayed", "paused", "meta", "pc", "marker")
        ]  # fmt: skip
        head = [k[n] for n in ("wait", "active", "prioritized", "events", "stalled", "limiter",
                               "delayed", "paused", "meta", "pc")]  # fmt: skip
        self._finish_keys = {
            target: ([*head, k[target]], k["metrics:" + target], k["marker"])
            for target in ("completed", "failed")
        }
        self._dlq_keys: list[Arg] = list(self.spec.dlq_keys)
        # BullMQ's own worker limiter: every fetch counts in the queue's `limiter` key, the
        # one a Node worker's `limiter` option counts in, so both sides share one limit; our
        # fetches also keep to a sliding window (sliding_limit_script), logged in this key
        limit = self.spec.rate_limit
        self._limiter = None if limit is None else {"max": limit.max, "duration": limit.duration_ms}
        self._limit_keys: list[Arg] = [] if limit is None else [k["orderflow-rate"]]
        self._limit_args: list[Arg] = [] if limit is None else [limit.max, limit.duration_ms]
        self._active_keys += self._limit_keys
        self._active_call = PreparedCall.of(
            self._active_script, len(self._active_keys), self._active_keys
        )
        self._complete_call = PreparedCall.of(
            self._finish_script,
            14 + len(self._dlq_keys) + len(self._limit_keys),  # moveToFinished's 14, then ours
            self._finish_keys["completed"][0],
        )
        self._completed_metrics = k["metrics:completed"]
        self._marker = k["marker"]
        self._opts_cache: dict[tuple[Any, ...], bytes] = {}

    # ---- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, grace_seconds: float = 30.0) -> None:
        """Process jobs until `stop` is set, then shut down gracefully within `grace_seconds`."""
        self._wakeup = asyncio.get_running_loop().create_future()
        await self._connect(stop)
        slots = [asyncio.create_task(self._slot()) for _ in range(self.spec.concurrency)]
        helpers = [
            asyncio.create_task(self._marker_loop()),
            asyncio.create_task(self._lock_loop()),
            asyncio.create_task(
                self._repeat("the heartbeat", self._heartbeat, lambda: HEARTBEAT_SECONDS)
            ),
            asyncio.create_task(self._reclaim_loop()),
            asyncio.create_task(  # BullMQ's stalled-job check: a dead worker's jobs go back
                self._repeat(
                    "the stalled-job check",
                    self._check_stalled,
                    lambda: self.spec.stalled_interval_ms / 1000,
                )
            ),
            asyncio.create_task(  # read by QueueAdmin.depth_history
                self._repeat(
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
        with contextlib.suppress(*REDIS_FAILURES):
            await self.client.execute("DEL", self._heartbeat_key)
        await self.blocking.close()
        await self.client.close()

    async def _connect(self, stop: asyncio.Event) -> None:
        """Wait until Redis answers and has loaded its dataset (a restart replays the AOF)."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                await self.client.execute("PING")
                try:
                    info = await self.client.execute("INFO", "persistence")
                except RedisReplyError as err:
                    if str(err).startswith("LOADING"):
                        raise
                    info = ""  # INFO forbidden (ACL): the first real command will tell
                if "loading:1" in str(info):
                    raise RedisReplyError("LOADING Redis is loading the dataset in memory")
                self.redis.ok()
                return
            except REDIS_FAILURES as err:
                self.redis.failed(err, "start-up")
                await backoff.wait()

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
        opts = msgpack.packb(
            {"token": token, "lockDuration": self.spec.lock_duration_ms,
             "limiter": self._limiter, "name": self.name},
            use_bin_type=True,
        )  # fmt: skip
        while True:
            try:
                raw = await self.client.call(
                    self._active_call,
                    [self.keys.base, int(time.time() * 1000), opts, *self._limit_args],
                )
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
            return await self._fail(job, err)
        finally:
            self._active.pop(job.id, None)
        return await self._complete(job, result)

    def _finish_args(
        self,
        job: Job,
        target: str,
        value: str,
        fetch_next: bool,
        fields: dict[str, str] | None,
    ) -> tuple[list[Arg], list[Arg]]:
        opts = self._finish_opts(job, target)
        head, metrics, marker = self._finish_keys[target]
        keys: list[Arg] = [*head, self.keys.job(job.id), metrics, marker]
        prop = "returnvalue" if target == "completed" else "failedReason"
        args: list[Arg] = [job.id, int(time.time() * 1000), prop, value, target,
                           "1" if fetch_next else "", self.keys.base, opts]  # fmt: skip
        if fields is not None:
            args.append(msgpack.packb([x for kv in fields.items() for x in kv], use_bin_type=True))
        return keys, args

    def _finish_opts(self, job: Job, target: str) -> bytes:
        """moveToFinished's packed opts; the same few combinations recur, so they are cached."""
        remove = job.opts.get(
            "removeOnComplete" if target == "completed" else "removeOnFail",
            self.spec.remove_on_complete if target == "completed" else self.spec.remove_on_fail,
        )
        key = (job.token, target, repr(remove), job.attempts, job.attempts_made)
        packed = self._opts_cache.get(key)
        if packed is None:
            if len(self._opts_cache) >= OPTS_CACHE_SIZE:
                self._opts_cache.clear()
            # As in Node BullMQ, the job fetched next is locked with the finished job's token.
            packed = self._opts_cache[key] = msgpack.packb(
                {"token": job.token, "keepJobs": keep_jobs(remove), "limiter": self._limiter,
                 "lockDuration": self.spec.lock_duration_ms, "attempts": job.attempts,
                 "attemptsMade": job.attempts_made, "fpof": False,
                 "maxMetricsSize": self.spec.metrics_max_data_points or "",
                 "cpof": False, "idof": False, "rdof": False, "name": self.name},
                use_bin_type=True,
            )  # fmt: skip
        return packed

    async def _complete(self, job: Job, result: Any) -> list[Any] | None:
        fetch_next = not self._stopping
        value = "null" if result is None else json.dumps(result, separators=(",", ":"), default=str)
        rest: list[Arg] = [
            self.keys.base + job.id, self._completed_metrics, self._marker, *self._dlq_keys,
            *self._limit_keys,
            job.id, int(time.time() * 1000), "returnvalue", value, "completed",
            "1" if fetch_next else "", self.keys.base, self._finish_opts(job, "completed"),
            *self._limit_args,
        ]  # fmt: skip
        raw = await self._run_finish(self._complete_call, [], rest, job)
        self.processed += 1
        if not fetch_next:
            return None
        return await self._next_from(raw, job.token)

    async def _run_finish(
        self, script: Script | PreparedCall, keys: list[Arg], args: list[Arg], job: Job
    ) -> Any:
        # The attempt's outcome is known: keep trying to record it while the job's lock can
        # still be ours, so a Redis blip does not make the job run again.
        deadline = time.monotonic() + self.spec.lock_duration_ms / 1000
        backoff = Backoff()
        while True:
            try:
                if isinstance(script, PreparedCall):
                    raw = await self.client.call(script, [*keys, *args])
                else:
                    raw = await self.client.run(script, keys, args)
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
                " so another worker owns it now", self.name, job.id, job.name, raw,
            )  # fmt: skip
            return None
        return raw

    async def _fail(self, job: Job, err: BaseException) -> list[Any] | None:
        self.failed += 1
        failed_reason = str(err) or type(err).__name__
        stack = [*job.previous_stacktrace(), "".join(traceback.format_exception(err))]
        fields = {"failedReason": failed_reason,
                  "stacktrace": json.dumps(stack[-STACKTRACE_KEEP:])}  # fmt: skip
        final = isinstance(err, UnrecoverableError) or job.attempts_made + 1 >= job.attempts
        delay = 0
        if not final:
            delay, why = await self._backoff(job, err)
            if delay < 0:
                final = True
                if why:
                    fields["failedReason"] = failed_reason = f"{failed_reason} ({why})"
        log.info("%s: job %r (%s) attempt %d failed: %s",
                 self.name, job.id, job.name, job.attempts_made + 1, failed_reason)  # fmt: skip
        if final:
            return await self._dead_letter(job, err, failed_reason, stack, fields)
        if delay > 0:
            packed = msgpack.packb([x for kv in fields.items() for x in kv], use_bin_type=True)
            await self._move_to_delayed(job, delay, count_attempt=True, fields=packed)
        else:
            k = self.keys
            keys: list[Arg] = [k["active"], k["wait"], k["paused"], k.job(job.id), k["meta"],
                               k["events"], k["delayed"], k["prioritized"], k["pc"], k["marker"],
                               k["stalled"]]  # fmt: skip
            packed = msgpack.packb([x for kv in fields.items() for x in kv], use_bin_type=True)
            args: list[Arg] = [k.base, int(time.time() * 1000), "LPUSH", job.id, job.token, packed]
            await self._run_finish(self._retry_script, keys, args, job)
        return None

    async def _retry_later(self, job: Job, err: RetryLater) -> None:
        """Back to the delayed set for `err.delay_ms`, attempts untouched (skip-attempt flag)."""
        log.info("%s: job %r (%s) delayed %d ms, no attempt counted: %s",
                 self.name, job.id, job.name, err.delay_ms, err)  # fmt: skip
        await self._move_to_delayed(job, err.delay_ms, count_attempt=False, fields=b"")

    async def _move_to_delayed(
        self, job: Job, delay_ms: int, *, count_attempt: bool, fields: bytes
    ) -> None:
        """BullMQ's moveToDelayed: a backoff (counts the attempt) or a RetryLater (does not)."""
        k = self.keys
        keys: list[Arg] = [k["marker"], k["active"], k["prioritized"], k["delayed"],
                           k.job(job.id), k["events"], k["meta"], k["stalled"], k["wait"],
                           k["limiter"], k["pc"]]  # fmt: skip
        args: list[Arg] = [k.base, int(time.time() * 1000), job.id, job.token, delay_ms,
                           "0" if count_attempt else "1", fields, "0"]  # fmt: skip
        await self._run_finish(self._delay_script, keys, args, job)

    async def _backoff(self, job: Job, err: BaseException) -> tuple[int, str]:
        """Delay in ms before the next attempt; negative means do not retry."""
        backoff = job.opts.get("backoff")
        if isinstance(backoff, int | float):
            backoff = {"type": "fixed", "delay": backoff}
        if not backoff:
            return 0, ""
        kind, base = backoff.get("type"), int(backoff.get("delay") or 0)
        made = job.attempts_made + 1
        if kind == "fixed":
            return base, ""
        if kind == "exponential":
            return round(2 ** (made - 1) * base), ""
        if self.backoff_strategy is None:
            return -1, f"no backoff strategy for type {kind!r}"
        value = self.backoff_strategy(made, kind, err, job)
        if inspect.isawaitable(value):
            value = await value
        return int(value), ""

    async def _dead_letter(
        self,
        job: Job,
        err: BaseException,
        reason: str,
        stack: list[str],
        fields: dict[str, str],
    ) -> list[Any] | None:
        entry = json.dumps(
            {"id": job.id, "name": job.name, "queue": self.spec.name, "data": job.data,
             "opts": job.opts, "failedReason": reason, "attemptsMade": job.attempts_made + 1,
             "stacktrace": stack[-STACKTRACE_KEEP:], "failedAt": int(time.time() * 1000),
             "unrecoverable": isinstance(err, UnrecoverableError)},
            default=str,
        )  # fmt: skip
        keys, args = self._finish_args(job, "failed", reason, False, fields)
        await self._run_finish(self._dlq_script, [*keys, *self._dlq_keys], [*args, entry], job)
        log.warning("%s: job %r (%s) dead-lettered to %s: %s",
                    self.name, job.id, job.name, self.spec.dlq, reason)  # fmt: skip
        return None

    async def _recover_lost(self) -> None:
        """Hand back jobs fetched by calls whose reply was lost (Redis restarted meanwhile).

        Without this they would sit in active, locked by this worker, until the lock expires
        and a stalled-job check moves them: a minute late.
        """
        lost, self._lost_tokens = self._lost_tokens, set()
        try:
            active = await self.client.execute("LRANGE", self.keys["active"], 0, -1)
            ids = [i for i in active or [] if i not in self._active]
            locks = await self.client.pipeline([["GET", self.keys.job(i) + ":lock"] for i in ids])
        except BaseException:
            self._lost_tokens |= lost
            raise
        for job_id, token in zip(ids, locks, strict=True):
            if isinstance(token, str) and token in lost:
                await self._hand_back_id(job_id, token)

    async def _hand_back(self, job: Job) -> None:
        """Shutdown ran out of grace: put the job back in wait, no attempt counted."""
        await self._hand_back_id(job.id, job.token)
        log.warning("%s: job %r (%s) handed back to the queue at shutdown",
                    self.name, job.id, job.name)  # fmt: skip

    async def _hand_back_id(self, job_id: str, token: str) -> None:
        k = self.keys
        keys: list[Arg] = [k["active"], k["wait"], k["stalled"], k["paused"], k["meta"],
                           k["limiter"], k["prioritized"], k["marker"], k["events"]]  # fmt: skip
        result = await self.client.run(self._handback_script, keys, [job_id, token, k.job(job_id)])
        if not (isinstance(result, int) and result < 0) and not self._stopping:
            log.warning("%s: job %r handed back to wait (its fetch reply was lost)",
                        self.name, job_id)  # fmt: skip
        self._wake()

    # ---- progress, logs, locks, stalled jobs ----------------------------------------------

    async def update_progress(self, job: Job, progress: Any) -> None:
        """Store a job's progress (BullMQ `job.updateProgress`)."""
        k = self.keys
        await self.client.run(
            self._progress_script,
            [k.job(job.id), k["events"], k["meta"]],
            [job.id, json.dumps(progress, separators=(",", ":"))],
        )

    async def add_log(self, job: Job, row: str) -> None:
        """Append to a job's log (BullMQ `job.log`)."""
        keep = job.opts.get("keepLogs", "")
        await self.client.run(
            self._log_script, [self.keys.job(job.id), self.keys.job(job.id) + ":logs"],
            [job.id, row, keep if keep is not None else ""],
        )  # fmt: skip

    async def _lock_loop(self) -> None:
        """Renew the locks of active jobs every half lock duration (BullMQ's lockRenewTime)."""
        interval = self.spec.lock_duration_ms / 2000
        while not self._stopping or self._active:
            await asyncio.sleep(interval)
            jobs = list(self._active.values())
            if not jobs:
                continue
            try:
                lost = await self.client.run(
                    self._locks_script,
                    [self.keys["stalled"]],
                    [self.keys.base, msgpack.packb([j.token for j in jobs]),
                     msgpack.packb([j.id for j in jobs]), self.spec.lock_duration_ms],
                )  # fmt: skip
                for job_id in lost or []:
                    log.warning("%s: lost the lock of job %r", self.name, job_id)
            except REDIS_FAILURES as err:
                self.redis.failed(err, "renewing locks")
            except Exception:
                log.exception("%s: unexpected error renewing locks", self.name)

    async def _check_stalled(self) -> None:
        stalled = await self.client.run(
            self._stalled_script,
            self._stalled_keys,
            [self.spec.max_stalled_count, self.keys.base, int(time.time() * 1000),
             self.spec.stalled_interval_ms],
        )  # fmt: skip
        for job_id in stalled or []:
            log.warning("%s: job %r stalled (its worker stopped); back to wait",
                        self.name, job_id)  # fmt: skip
        if stalled:
            self._wake()

    async def _repeat(
        self, what: str, work: Callable[[], Awaitable[object]], every: Callable[[], float]
    ) -> None:
        """Run `work` every `every()` seconds until the worker stops; a failure is logged, not fatal."""
        while not self._stopping:
            try:
                await work()
            except REDIS_FAILURES as err:
                self.redis.failed(err, what)
            except Exception:
                log.exception("%s: unexpected error in %s", self.name, what)
            await asyncio.sleep(every())

    async def _heartbeat(self) -> None:
        """Keep this worker's heartbeat key alive (see HEARTBEAT_TTL_MS)."""
        await self.client.execute("SET", self._heartbeat_key, self.name, "PX", HEARTBEAT_TTL_MS)

    async def _reclaim_loop(self) -> None:
        """For one lock duration after start, take back the active jobs of dead workers."""
        deadline = time.monotonic() + self.spec.lock_duration_ms / 1000
        while not self._stopping and time.monotonic() < deadline:
            try:
                if not await self._reclaim_dead():
                    return
            except REDIS_FAILURES as err:
                self.redis.failed(err, "reclaiming a dead worker's jobs")
            except Exception:
                log.exception("%s: unexpected error reclaiming jobs", self.name)
            await asyncio.sleep(RECLAIM_EVERY_SECONDS)

    async def _reclaim_dead(self) -> bool:
        """Release the locks of active jobs whose worker is dead; True while some may yet be.

        Dead: its heartbeat expired and no Redis connection carries its id (a worker that is
        alive but slow still holds its connections; one reconnecting refreshes its heartbeat
        within a second). Locks of other kinds of worker (Node BullMQ) are left to expire.
        """
        self.reclaim_checks += 1
        active = await self.client.execute("LRANGE", self.keys["active"], 0, -1)
        ids = [job_id for job_id in active or [] if job_id not in self._active]
        if not ids:
            return False
        locks = await self.client.pipeline([["GET", self.keys.job(i) + ":lock"] for i in ids])
        owned: dict[str, list[tuple[str, str]]] = {}
        for job_id, token in zip(ids, locks, strict=True):
            if token is None:  # its lock expired: stalled for sure, nobody renews it
                owned.setdefault("", []).append((job_id, ""))
                continue
            match = _OUR_TOKEN.fullmatch(token) if isinstance(token, str) else None
            if match and match[1] != self.id:
                owned.setdefault(match[1], []).append((job_id, token))
        if not owned:
            return False
        lockless = owned.pop("", [])
        owners = list(owned)
        beats = await self.client.pipeline(
            [["EXISTS", self.keys[f"orderflow-alive:{owner}"]] for owner in owners]
        )
        silent = [owner for owner, beat in zip(owners, beats, strict=True) if beat == 0]
        dead: list[str] = []
        if silent:
            try:
                connected = str(await self.client.execute("CLIENT", "LIST"))
            except RedisReplyError:  # CLIENT may be forbidden (ACL, managed Redis)
                connected = ""
            dead = [owner for owner in silent if not _connected(owner, connected)]
        pairs: list[Arg] = [x for owner in dead for pair in owned[owner] for x in pair]
        pairs += [x for pair in lockless for x in pair]
        if pairs:
            released = await self.client.run(
                self._release_script,
                [self.keys["stalled"], self.keys["stalled-check"], self.keys["active"]],
                [self.keys.base, *pairs],
            )
            if released:  # none: they finished between the reads (no lock, no longer active)
                log.warning("%s: took back %s active job(s) of dead worker(s) %s",
                            self.name, released, ", ".join(o[:8] for o in dead) or "(lock expired)")  # fmt: skip
                await self._check_stalled()
        return len(dead) < len(owners)

    # ---- queue depth over time -----------------------------------------------------------

    async def sample_depth(self, now_ms: int | None = None) -> dict[str, int]:
        """Record the queue's depth for the minute of `now_ms` (default: now), in one round trip.

        The minute is the sample's field in `<prefix>:<queue>:orderflow-depth`: every worker of
        the queue samples, and those of one minute leave one sample (the last one written).
        """
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        sample = await self.client.run(
            depth_sample_script(),
            depth_keys(self.keys),
            [now - now % MINUTE_MS, DEPTH_HISTORY_MS],
        )
        return {k: int(v) for k, v in json.loads(sample).items()}
