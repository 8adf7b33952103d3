"""BullMQ's own Lua scripts (shipped with the `bullmq` package) and the bridge's few additions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import bullmq
from bullmq.queue_keys import QueueKeys

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


# A sliding-window log: KEYS[1] zset of start times; ARGV max, window ms, member.
# Returns 0 when granted, else the ms to wait until the oldest start leaves the window.
RATE_LIMIT_LUA = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return -ms
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - ms)
"""


@cache
def rate_limit_script() -> Script:
    """Grant one request if fewer than max came in the last window (Redis clock); the ingress's.

    Returns minus the grant time in ms, or the delay in ms until a request may be free.
    """
    return Script("orderflowRateLimit", RATE_LIMIT_LUA)


# Wraps BullMQ's moveToActive or moveToFinished (the body): the last key is the worker's start
# log (a zset), the last two args the limit's max and window in ms; both are taken off before
# the body runs, so it sees BullMQ's own keys and args. The body's timestamp (the fetched job's
# processedOn) becomes Redis's clock, and a fetch is made only while fewer than max jobs started
# in the last window; refused, moveToFinished still finishes its job, fetching none, and
# moveToActive answers as BullMQ's limiter does ({0, 0, ms to wait, 0}).
SLIDING_LIMIT_LUA = """
local window = tonumber(table.remove(ARGV))
local max = tonumber(table.remove(ARGV))
local startLog = table.remove(KEYS)
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
ARGV[2] = tostring(ms)
redis.call('ZREMRANGEBYSCORE', startLog, '-inf', ms - window)
local wait = 0
if redis.call('ZCARD', startLog) >= max then
  local oldest = redis.call('ZRANGE', startLog, 0, 0, 'WITHSCORES')
  wait = math.max(1, tonumber(oldest[2]) + window - ms)
end
local function orderflow_body()
BODY
end
if wait > 0 then
  if IS_FETCH then return {0, 0, wait, 0} end
  ARGV[6] = ''
end
local result = orderflow_body()
if type(result) == 'table' and result[1] ~= 0 and result[2] then
  redis.call('ZADD', startLog, ms, result[2] .. ':' .. ms)
  redis.call('PEXPIRE', startLog, window)
end
return result
"""


@cache
def sliding_limit_script(script: Script) -> Script:
    """BullMQ's moveToActive, or moveToFinished (complete_script), under a sliding-window limit.

    BullMQ's own limiter (a counter per fixed window, opened by its first start) is counted too,
    through the limiter option, so Node workers on the queue share the limit; the sliding
    window keeps this worker's starts under it in every window, not only in BullMQ's.
    """
    is_fetch = "true" if script.name == "moveToActive" else "false"
    source = SLIDING_LIMIT_LUA.replace("IS_FETCH", is_fetch).replace("BODY", script.source, 1)
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
    source = (
        "local orderflow_keep = cmsgpack.unpack(ARGV[8])['keepJobs'] or {}\n"
        "local orderflow_failed = {}\n"
        "if (orderflow_keep['count'] or -1) > 0 or orderflow_keep['age'] ~= nil then\n"
        "  for _, id in ipairs(redis.call('ZRANGE', KEYS[16], 0, -1)) do\n"
        "    if redis.call('ZSCORE', KEYS[11], id) then table.insert(orderflow_failed, id) end\n"
        "  end\n"
        "end\n"
        "local function orderflow_move_to_finished()\n"
        f"{body}\nend\n"
        "local result = orderflow_move_to_finished()\n"
        "if result == 0 or type(result) == 'table' then\n"
        "  redis.call('HSET', KEYS[15], ARGV[1], ARGV[10])\n"
        "  redis.call('ZADD', KEYS[16], ARGV[2], ARGV[1])\n"
        "  if redis.call('EXISTS', KEYS[12]) == 0 then\n"
        "    redis.call('SADD', KEYS[17], ARGV[1])\n"
        "  else\n"
        "    redis.call('SREM', KEYS[17], ARGV[1])\n"
        "  end\n"
        "  for _, id in ipairs(orderflow_failed) do\n"
        "    if not redis.call('ZSCORE', KEYS[11], id) and redis.call('EXISTS', ARGV[7] .. id) == 0 then\n"
        "      redis.call('SADD', KEYS[17], id)\n"
        "    end\n"
        "  end\n"
        "end\n"
        "return result\n"
    )
    return Script("orderflowDeadLetter", source)


@cache
def clean_script() -> Script:
    """BullMQ's cleanJobsInSet (Queue.clean) that marks the removed jobs with a DLQ entry detached.

    KEYS[4] DLQ hash, KEYS[5] DLQ detached set, after BullMQ's 3 keys and 4 args. In the same
    call as the removal, so a DLQ read in between never takes a cleaned job for a retried one.
    """
    body = bullmq_script("cleanJobsInSet-3.lua").source
    source = (
        "local function orderflow_clean()\n"
        f"{body}\nend\n"
        "local removed = orderflow_clean()\n"
        "for _, id in ipairs(removed) do\n"
        "  if redis.call('HEXISTS', KEYS[4], id) == 1 then\n"
        "    redis.call('SADD', KEYS[5], id)\n"
        "  end\n"
        "end\n"
        "return removed\n"
    )
    return Script("orderflowClean", source)


# Drop the DLQ entries whose job is no longer failed in BullMQ: KEYS[1] DLQ hash, KEYS[2] DLQ
# index, KEYS[3] DLQ detached set, KEYS[4] the queue's failed zset; ARGV[1] the job key prefix,
# then the ids to look at (none: every entry).
# An entry stays while its job is in the failed set, or its job is gone but was removed while
# failed (detached: retention or removeOnFail). Any other entry's job was retried outside our
# admin (a Node tool, bull-board) and is waiting, active, delayed, completed or removed since.
# One atomic call: a job that fails for good meanwhile is dead-lettered before or after it.
DLQ_PRUNE_LUA = """
local pruned = 0
local ids = {unpack(ARGV, 2)}
if #ids == 0 then ids = redis.call('ZRANGE', KEYS[2], 0, -1) end
for _, id in ipairs(ids) do
  if redis.call('ZSCORE', KEYS[2], id) and not redis.call('ZSCORE', KEYS[4], id) then
    if redis.call('EXISTS', ARGV[1] .. id) == 1 or redis.call('SISMEMBER', KEYS[3], id) == 0 then
      redis.call('ZREM', KEYS[2], id)
      redis.call('HDEL', KEYS[1], id)
      redis.call('SREM', KEYS[3], id)
      pruned = pruned + 1
    end
  end
end
return pruned
"""


@cache
def dlq_prune_script() -> Script:
    """Drop the DLQ entries of jobs retried outside our admin (no longer failed); returns how many."""
    return Script("orderflowDlqPrune", DLQ_PRUNE_LUA)


@cache
def complete_script() -> Script:
    """BullMQ's moveToFinished for a completion that also drops the job's DLQ entry, if any.

    KEYS[15] DLQ hash, KEYS[16] DLQ index. A dead-lettered job retried outside our admin (a
    Node tool's job.retry, bull-board's Retry button) and then completed here has not failed
    for good: its entry goes in the same atomic call (one ZREM on the usual path).
    """
    body = bullmq_script("moveToFinished-14.lua").source
    source = (
        "local function orderflow_move_to_finished()\n"
        f"{body}\nend\n"
        "local result = orderflow_move_to_finished()\n"
        "if (result == 0 or type(result) == 'table')"
        " and redis.call('ZREM', KEYS[16], ARGV[1]) == 1 then\n"
        "  redis.call('HDEL', KEYS[15], ARGV[1])\n"
        "end\n"
        "return result\n"
    )
    return Script("orderflowComplete", source)


# Take back the jobs of a worker known to be dead: KEYS[1] stalled set, KEYS[2] stalled-check,
# KEYS[3] active list; ARGV[1] the queue's key prefix, then job id and lock token pairs (an empty
# token: the lock has expired already). A job still active whose lock still holds the dead
# worker's token (or none) has its lock deleted and is marked stalled, and the stalled-check
# throttle is lifted, so BullMQ's own stalled-job check moves it to wait (counting the stall) at
# once. A job no longer active finished since its lock was read: it is left alone.
RELEASE_DEAD_LOCKS_LUA = """
local released = 0
for i = 2, #ARGV, 2 do
  local lock = ARGV[1] .. ARGV[i] .. ':lock'
  local held = redis.call('GET', lock)
  if (held == ARGV[i + 1] or (held == false and ARGV[i + 1] == ''))
      and redis.call('LPOS', KEYS[3], ARGV[i]) ~= false then
    redis.call('DEL', lock)
    redis.call('SADD', KEYS[1], ARGV[i])
    released = released + 1
  end
end
if released > 0 then
  redis.call('DEL', KEYS[2])
end
return released
"""


@cache
def release_dead_locks_script() -> Script:
    """Release the locks of a dead worker's jobs so the stalled-job check can move them now."""
    return Script("orderflowReleaseDeadLocks", RELEASE_DEAD_LOCKS_LUA)


# Queue depth over time: one sample a minute, written by every worker of the queue (the minute is
# the hash field, so several workers in one minute leave one sample: the last writer's).
DEPTH_KEY = "orderflow-depth"  # <prefix>:<queue>:orderflow-depth, hash minute ms → JSON counts
DEPTH_HISTORY_MS = (
    3_600_000  # samples are kept an hour (and the hash expires an hour after the last)
)
# the getJobCounts types a sample holds, as BullMQ's getCounts reads them (lists: LLEN, sets: ZCARD)
DEPTH_TYPES = ("waiting", "paused", "active", "delayed", "prioritized")

# KEYS wait, paused, active, delayed, prioritized, the depth hash; ARGV this minute's start (ms),
# the history length (ms). Writes this minute's sample, drops older than the history, returns it.
DEPTH_SAMPLE_LUA = """
local counts = {
  waiting = redis.call("LLEN", KEYS[1]), paused = redis.call("LLEN", KEYS[2]),
  active = redis.call("LLEN", KEYS[3]), delayed = redis.call("ZCARD", KEYS[4]),
  prioritized = redis.call("ZCARD", KEYS[5])
}
local sample = cjson.encode(counts)
redis.call("HSET", KEYS[6], ARGV[1], sample)
local oldest = tonumber(ARGV[1]) - tonumber(ARGV[2])
for _, minute in ipairs(redis.call("HKEYS", KEYS[6])) do
  local at = tonumber(minute)
  if at == nil or at <= oldest then
    redis.call("HDEL", KEYS[6], minute)
  end
end
redis.call("PEXPIRE", KEYS[6], ARGV[2])
return sample
"""


@cache
def depth_sample_script() -> Script:
    """Record the queue's depth for this minute and trim the samples to the last hour."""
    return Script("orderflowDepthSample", DEPTH_SAMPLE_LUA)


def depth_keys(keys: Keys) -> list[str]:
    """The KEYS of depth_sample_script for one queue."""
    return [keys[n] for n in ("wait", "paused", "active", "delayed", "prioritized", DEPTH_KEY)]
