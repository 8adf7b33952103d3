"""BullMQ's own Lua scripts (shipped with the `bullmq` package), the bridge's few additions.

And every call a worker makes of them: `WorkerScripts` builds each call's keys and args (as
bullmq's `scripts.py` does, e.g. `moveToFinishedArgs`); the worker only decides when. The Lua
of our own scripts is in bridge/lua.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import bullmq
import msgpack
from bullmq.queue_keys import QueueKeys

from bridge import lua
from bridge.redis_client import Arg, PreparedCall, RedisClient, Script
from bridge.specs import QueueSpec

if TYPE_CHECKING:
    from bridge.job import Job

COMMANDS = Path(bullmq.__file__).parent / "commands"


@cache
def bullmq_script(filename: str) -> Script:
    """One of BullMQ's Lua scripts by file name, e.g. 'moveToFinished-14.lua'."""
    return Script(filename.split("-")[0], (COMMANDS / filename).read_text())


@dataclass(frozen=True)
class Keys:
    """The Redis keys of one queue, exactly as BullMQ names them."""

    prefix: str
    queue: str

    @property
    def base(self) -> str:
        """`<prefix>:<queue>:`, the prefix of every job key."""
        return f"{self.prefix}:{self.queue}:"

    def __getitem__(self, name: str) -> str:
        return QueueKeys(self.prefix).toKey(self.queue, name)

    def job(self, job_id: str) -> str:
        """The hash of one job."""
        return self.base + job_id

    def many(self, names: str) -> list[Arg]:
        """The keys named in `names` (space-separated), in that order."""
        return [self[name] for name in names.split()]

    def alive(self, worker_id: str) -> str:
        """A BridgeWorker's heartbeat key (bridge/liveness.py)."""
        return self[f"orderflow-alive:{worker_id}"]


@cache
def rate_limit_script() -> Script:
    """Grant one request if fewer than max came in the last window (Redis clock); the ingress's.

    Returns minus the grant time in ms, or the delay in ms until a request may be free.
    """
    return Script("orderflowRateLimit", lua.RATE_LIMIT_LUA)


@cache
def sliding_limit_script(script: Script) -> Script:
    """BullMQ's moveToActive, or moveToFinished (complete_script), under a sliding-window limit.

    BullMQ's own limiter (a counter per fixed window, opened by its first start) is counted too,
    through the limiter option, so Node workers on the queue share the limit; the sliding
    window keeps this worker's starts under it in every window, not only in BullMQ's.
    """
    is_fetch = "true" if script.name == "moveToActive" else "false"
    source = lua.SLIDING_LIMIT_LUA.replace("IS_FETCH", is_fetch).replace("BODY", script.source, 1)
    return Script("orderflowLimited-" + script.name, source)


@cache
def dead_letter_script() -> Script:
    """BullMQ's moveToFinished that also writes the DLQ entry, in one atomic call.

    KEYS[15] DLQ hash (job id -> entry JSON), KEYS[16] DLQ index (zset by failure time),
    KEYS[17] DLQ detached set; ARGV[10] the entry. The entry is written only if the job really
    moved to failed; a job its removeOnFail removed at once is marked detached (see
    dlq_prune_script), so its entry stays. So is every older dead-lettered job that the
    removeOnFail count or age trims from the failed set in the same call.
    """
    body = bullmq_script("moveToFinished-14.lua").source
    return Script("orderflowDeadLetter", lua.DEAD_LETTER_LUA.replace("BODY", body, 1))


@cache
def clean_script() -> Script:
    """BullMQ's cleanJobsInSet (Queue.clean) that marks the removed jobs with a DLQ entry detached.

    KEYS[4] DLQ hash, KEYS[5] DLQ detached set, after BullMQ's 3 keys and 4 args. In the same
    call as the removal, so a DLQ read in between never takes a cleaned job for a retried one.
    """
    body = bullmq_script("cleanJobsInSet-3.lua").source
    return Script("orderflowClean", lua.CLEAN_LUA.replace("BODY", body, 1))


@cache
def dlq_prune_script() -> Script:
    """Drop the DLQ entries of jobs retried outside our admin (no longer failed); returns how many."""
    return Script("orderflowDlqPrune", lua.DLQ_PRUNE_LUA)


@cache
def complete_script() -> Script:
    """BullMQ's moveToFinished for a completion that also drops the job's DLQ entry, if any.

    KEYS[15] DLQ hash, KEYS[16] DLQ index. A dead-lettered job retried outside our admin (a
    Node tool's job.retry, bull-board's Retry button) and then completed here has not failed
    for good: its entry goes in the same atomic call (one ZREM on the usual path).
    """
    body = bullmq_script("moveToFinished-14.lua").source
    return Script("orderflowComplete", lua.COMPLETE_LUA.replace("BODY", body, 1))


@cache
def release_dead_locks_script() -> Script:
    """Release the locks of a dead worker's jobs so the stalled-job check can move them now."""
    return Script("orderflowReleaseDeadLocks", lua.RELEASE_DEAD_LOCKS_LUA)


# Queue depth over time: one sample a minute, written by every worker of the queue (the minute is
# the hash field, so several workers in one minute leave one sample: the last writer's).
DEPTH_KEY = "orderflow-depth"  # <prefix>:<queue>:orderflow-depth, hash minute ms → JSON counts
DEPTH_HISTORY_MS = (
    3_600_000  # samples are kept an hour (and the hash expires an hour after the last)
)
# the getJobCounts types a sample holds, as BullMQ's getCounts reads them (lists: LLEN, sets: ZCARD)
DEPTH_TYPES = ("waiting", "paused", "active", "delayed", "prioritized")
MINUTE_MS = 60_000  # a depth sample's field is the start of its minute


@cache
def depth_sample_script() -> Script:
    """Record the queue's depth for this minute and trim the samples to the last hour."""
    return Script("orderflowDepthSample", lua.DEPTH_SAMPLE_LUA)


def depth_keys(keys: Keys) -> list[str]:
    """The KEYS of depth_sample_script for one queue."""
    return [keys[n] for n in ("wait", "paused", "active", "delayed", "prioritized", DEPTH_KEY)]


OPTS_CACHE_SIZE = 4096  # packed moveToFinished opts kept (per token and attempt, a few each)
# the keys of BullMQ's scripts, in the order each script takes them
FINISH_HEAD_KEYS = "wait active prioritized events stalled limiter delayed paused meta pc"
FETCH_KEYS = FINISH_HEAD_KEYS + " marker"
STALLED_KEYS = "stalled wait active stalled-check meta paused marker events repeat"
RETRY_KEYS = "active wait paused"  # then the job, then RETRY_TAIL_KEYS
RETRY_TAIL_KEYS = "meta events delayed prioritized pc marker stalled"
DELAY_KEYS = "marker active prioritized delayed"  # then the job, then DELAY_TAIL_KEYS
DELAY_TAIL_KEYS = "events meta stalled wait limiter pc"
HAND_BACK_KEYS = "active wait stalled paused meta limiter prioritized marker events"


def keep_jobs(remove: Any) -> dict[str, Any]:
    """BullMQ's removeOnComplete/removeOnFail as the keepJobs option of moveToFinished."""
    if isinstance(remove, bool) or remove is None:
        return {"count": 0} if remove else {"count": -1}
    if isinstance(remove, int):
        return {"count": remove}
    return dict(remove)


def packed_fields(fields: dict[str, str]) -> bytes:
    """Job hash fields as the flat msgpack array BullMQ's scripts take ([field, value, ...])."""
    return msgpack.packb([x for kv in fields.items() for x in kv], use_bin_type=True)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Call(NamedTuple):
    """One script call: a script (or a prepared call, whose `args` are the rest) and its input."""

    script: Script | PreparedCall
    keys: list[Arg]
    args: list[Arg]

    async def run(self, client: RedisClient) -> Any:
        """Run the call on `client` (raises RedisReplyError on an error reply)."""
        if isinstance(self.script, PreparedCall):
            return await client.call(self.script, [*self.keys, *self.args])
        return await client.run(self.script, self.keys, self.args)


class WorkerScripts:
    """Every Lua call of one BridgeWorker, its keys and args built here (bullmq's `Scripts`).

    Each method returns a Call; the worker decides when to run it. The scripts are registered
    on the worker's connection, so a reconnect loads them again.
    """

    def __init__(self, client: RedisClient, spec: QueueSpec, name: str) -> None:
        self.spec = spec
        self.name = name
        self.keys = k = Keys(spec.prefix, spec.name)
        limit = spec.rate_limit

        def limited(script: Script) -> Script:
            return script if limit is None else sliding_limit_script(script)

        # completions also drop the job's DLQ entry, if any (complete_script)
        finish = client.register(limited(complete_script()))
        self.dead_letter_script = client.register(dead_letter_script())
        fetch = client.register(limited(bullmq_script("moveToActive-11.lua")))
        self.delay_script = client.register(bullmq_script("moveToDelayed-11.lua"))
        self.retry_script = client.register(bullmq_script("retryJob-11.lua"))
        self.locks_script = client.register(bullmq_script("extendLocks-1.lua"))
        self.stalled_script = client.register(bullmq_script("moveStalledJobsToWait-9.lua"))
        self.hand_back_script = client.register(bullmq_script("moveJobFromActiveToWait-9.lua"))
        self.progress_script = client.register(bullmq_script("updateProgress-3.lua"))
        self.log_script = client.register(bullmq_script("addLog-2.lua"))
        self.release_script = client.register(release_dead_locks_script())
        head = k.many(FINISH_HEAD_KEYS)
        self._finish_keys = {
            target: ([*head, k[target]], k["metrics:" + target], k["marker"])
            for target in ("completed", "failed")
        }
        self._dlq_keys: list[Arg] = list(spec.dlq_keys)
        # BullMQ's own worker limiter: every fetch counts in the queue's `limiter` key, the
        # one a Node worker's `limiter` option counts in, so both sides share one limit; our
        # fetches also keep to a sliding window (sliding_limit_script), logged in this key
        self._limiter = None if limit is None else {"max": limit.max, "duration": limit.duration_ms}
        self._limit_keys: list[Arg] = [] if limit is None else [k["orderflow-rate"]]
        self._limit_args: list[Arg] = [] if limit is None else [limit.max, limit.duration_ms]
        fetch_keys = [*k.many(FETCH_KEYS), *self._limit_keys]
        self.fetch_call = PreparedCall.of(fetch, len(fetch_keys), fetch_keys)
        self.complete_call = PreparedCall.of(
            finish,
            14 + len(self._dlq_keys) + len(self._limit_keys),  # moveToFinished's 14, then ours
            self._finish_keys["completed"][0],
        )
        self._completed_metrics, self._marker = k["metrics:completed"], k["marker"]
        self._opts_cache: dict[tuple[Any, ...], bytes] = {}

    def fetch(self, token: str) -> Call:
        """moveToActive: the next job, locked with `token` (a prepared call)."""
        opts = msgpack.packb(
            {
                "token": token,
                "lockDuration": self.spec.lock_duration_ms,
                "limiter": self._limiter,
                "name": self.name,
            },
            use_bin_type=True,
        )
        return Call(self.fetch_call, [], [self.keys.base, _now_ms(), opts, *self._limit_args])

    def complete(self, job: Job, value: str, fetch_next: bool) -> Call:
        """moveToFinished to completed with the JSON `value` (a prepared call, the hot path)."""
        k = self.keys
        fetch, opts = "1" if fetch_next else "", self.finish_opts(job, "completed")
        rest: list[Arg] = [k.job(job.id), self._completed_metrics, self._marker, *self._dlq_keys]
        rest += [*self._limit_keys, job.id, _now_ms(), "returnvalue", value, "completed", fetch]
        rest += [k.base, opts, *self._limit_args]
        return Call(self.complete_call, [], rest)

    def finish_args(
        self, job: Job, target: str, value: str, fetch_next: bool, fields: dict[str, str] | None
    ) -> tuple[list[Arg], list[Arg]]:
        """moveToFinished's keys and args (`target` completed or failed), as bullmq's."""
        opts = self.finish_opts(job, target)
        head, metrics, marker = self._finish_keys[target]
        keys: list[Arg] = [*head, self.keys.job(job.id), metrics, marker]
        prop = "returnvalue" if target == "completed" else "failedReason"
        fetch = "1" if fetch_next else ""
        args: list[Arg] = [job.id, _now_ms(), prop, value, target, fetch, self.keys.base, opts]
        if fields is not None:
            args.append(packed_fields(fields))
        return keys, args

    def finish_opts(self, job: Job, target: str) -> bytes:
        """moveToFinished's packed opts; the same few combinations recur, so they are cached."""
        completed = target == "completed"
        remove = job.opts.get(
            "removeOnComplete" if completed else "removeOnFail",
            self.spec.remove_on_complete if completed else self.spec.remove_on_fail,
        )
        key = (job.token, target, repr(remove), job.attempts, job.attempts_made)
        packed = self._opts_cache.get(key)
        if packed is None:
            if len(self._opts_cache) >= OPTS_CACHE_SIZE:
                self._opts_cache.clear()
            packed = self._opts_cache[key] = msgpack.packb(
                self._opts(job, remove), use_bin_type=True
            )
        return packed

    def _opts(self, job: Job, remove: Any) -> dict[str, Any]:
        # As in Node BullMQ, the job fetched next is locked with the finished job's token.
        return {
            "token": job.token,
            "keepJobs": keep_jobs(remove),
            "limiter": self._limiter,
            "lockDuration": self.spec.lock_duration_ms,
            "attempts": job.attempts,
            "attemptsMade": job.attempts_made,
            "fpof": False,
            "maxMetricsSize": self.spec.metrics_max_data_points or "",
            "cpof": False,
            "idof": False,
            "rdof": False,
            "name": self.name,
        }

    def dead_letter(self, job: Job, reason: str, fields: dict[str, str], entry: str) -> Call:
        """moveToFinished to failed that also writes `entry` to the DLQ (dead_letter_script)."""
        keys, args = self.finish_args(job, "failed", reason, False, fields)
        return Call(self.dead_letter_script, [*keys, *self._dlq_keys], [*args, entry])

    def retry(self, job: Job, fields: dict[str, str]) -> Call:
        """retryJob: back to wait at once, the attempt counted."""
        k = self.keys
        keys = [*k.many(RETRY_KEYS), k.job(job.id), *k.many(RETRY_TAIL_KEYS)]
        packed = packed_fields(fields)
        return Call(
            self.retry_script, keys, [k.base, _now_ms(), "LPUSH", job.id, job.token, packed]
        )

    def move_to_delayed(
        self, job: Job, delay_ms: int, *, count_attempt: bool, fields: dict[str, str] | None
    ) -> Call:
        """moveToDelayed: a backoff (counts the attempt) or a RetryLater (does not)."""
        k = self.keys
        keys = [*k.many(DELAY_KEYS), k.job(job.id), *k.many(DELAY_TAIL_KEYS)]
        skip_attempt = "0" if count_attempt else "1"
        packed = b"" if fields is None else packed_fields(fields)
        args: list[Arg] = [k.base, _now_ms(), job.id, job.token, delay_ms, skip_attempt, packed]
        return Call(self.delay_script, keys, [*args, "0"])

    def hand_back(self, job_id: str, token: str) -> Call:
        """moveJobFromActiveToWait: an unfinished job back to wait, no attempt counted."""
        k = self.keys
        return Call(self.hand_back_script, k.many(HAND_BACK_KEYS), [job_id, token, k.job(job_id)])

    def update_progress(self, job: Job, progress: Any) -> Call:
        """updateProgress: the job's progress, as JSON."""
        k = self.keys
        encoded = json.dumps(progress, separators=(",", ":"))
        return Call(
            self.progress_script, [k.job(job.id), k["events"], k["meta"]], [job.id, encoded]
        )

    def add_log(self, job: Job, row: str) -> Call:
        """addLog: one row of the job's log, trimmed to its keepLogs option."""
        keep = job.opts.get("keepLogs", "")
        keys: list[Arg] = [self.keys.job(job.id), self.keys.job(job.id) + ":logs"]
        return Call(self.log_script, keys, [job.id, row, keep if keep is not None else ""])

    def extend_locks(self, jobs: Sequence[Job]) -> Call:
        """extendLocks: every lock of `jobs` renewed for a lock duration."""
        tokens, ids = msgpack.packb([j.token for j in jobs]), msgpack.packb([j.id for j in jobs])
        args: list[Arg] = [self.keys.base, tokens, ids, self.spec.lock_duration_ms]
        return Call(self.locks_script, [self.keys["stalled"]], args)

    def move_stalled(self) -> Call:
        """moveStalledJobsToWait: BullMQ's stalled-job check."""
        spec = self.spec
        args: list[Arg] = [spec.max_stalled_count, self.keys.base, _now_ms()]
        keys = self.keys.many(STALLED_KEYS)
        return Call(self.stalled_script, keys, [*args, spec.stalled_interval_ms])

    def release_dead_locks(self, pairs: list[Arg]) -> Call:
        """release_dead_locks_script over job id and lock token `pairs` (flat)."""
        k = self.keys
        keys: list[Arg] = [k["stalled"], k["stalled-check"], k["active"]]
        return Call(self.release_script, keys, [k.base, *pairs])

    def depth_sample(self, now_ms: int) -> Call:
        """depth_sample_script for the minute of `now_ms`."""
        args: list[Arg] = [now_ms - now_ms % MINUTE_MS, DEPTH_HISTORY_MS]
        return Call(depth_sample_script(), list(depth_keys(self.keys)), args)
