"""BullMQ's own Lua scripts (shipped with the `bullmq` package) and the bridge's few additions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import bullmq
from bullmq.queue_keys import QueueKeys

from bridge import lua
from bridge.redis_client import Script

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


@cache
def depth_sample_script() -> Script:
    """Record the queue's depth for this minute and trim the samples to the last hour."""
    return Script("orderflowDepthSample", lua.DEPTH_SAMPLE_LUA)


def depth_keys(keys: Keys) -> list[str]:
    """The KEYS of depth_sample_script for one queue."""
    return [keys[n] for n in ("wait", "paused", "active", "delayed", "prioritized", DEPTH_KEY)]
