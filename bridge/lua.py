"""The Lua source of the bridge's own scripts; bridge/scripts.py makes them Scripts and calls them.

BODY in a wrapper is replaced by the BullMQ script it wraps (its source, as shipped).
"""

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

# Wraps moveToFinished to write the DLQ entry too (see scripts.dead_letter_script for the keys)
DEAD_LETTER_LUA = """\
local orderflow_keep = cmsgpack.unpack(ARGV[8])['keepJobs'] or {}
local orderflow_failed = {}
if (orderflow_keep['count'] or -1) > 0 or orderflow_keep['age'] ~= nil then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[16], 0, -1)) do
    if redis.call('ZSCORE', KEYS[11], id) then table.insert(orderflow_failed, id) end
  end
end
local function orderflow_move_to_finished()
BODY
end
local result = orderflow_move_to_finished()
if result == 0 or type(result) == 'table' then
  redis.call('HSET', KEYS[15], ARGV[1], ARGV[10])
  redis.call('ZADD', KEYS[16], ARGV[2], ARGV[1])
  if redis.call('EXISTS', KEYS[12]) == 0 then
    redis.call('SADD', KEYS[17], ARGV[1])
  else
    redis.call('SREM', KEYS[17], ARGV[1])
  end
  for _, id in ipairs(orderflow_failed) do
    if not redis.call('ZSCORE', KEYS[11], id) and redis.call('EXISTS', ARGV[7] .. id) == 0 then
      redis.call('SADD', KEYS[17], id)
    end
  end
end
return result
"""

# Wraps cleanJobsInSet to mark the removed jobs that have a DLQ entry detached (scripts.clean_script)
CLEAN_LUA = """\
local function orderflow_clean()
BODY
end
local removed = orderflow_clean()
for _, id in ipairs(removed) do
  if redis.call('HEXISTS', KEYS[4], id) == 1 then
    redis.call('SADD', KEYS[5], id)
  end
end
return removed
"""

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

# Wraps moveToFinished to drop a completed job's DLQ entry, if any (scripts.complete_script)
COMPLETE_LUA = """\
local function orderflow_move_to_finished()
BODY
end
local result = orderflow_move_to_finished()
if (result == 0 or type(result) == 'table') and redis.call('ZREM', KEYS[16], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[15], ARGV[1])
end
return result
"""

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
