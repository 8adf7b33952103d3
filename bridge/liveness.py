"""A worker's locks and liveness, and how it rides out Redis failures (bullmq's `lock_manager.py`).

`Liveness` waits at start-up until Redis answers, renews the locks of the worker's active jobs,
runs BullMQ's stalled-job check, keeps the worker's heartbeat key alive, and for one lock
duration after start takes back the jobs of dead workers. Every script call is built in
bridge/scripts.py (`WorkerScripts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.job import Job
from bridge.redis_client import Arg, RedisClient, RedisReplyError
from bridge.scripts import WorkerScripts

log = logging.getLogger("orderflow.bridge")

RETRY_FIRST_DELAY = 0.1  # first wait after a Redis failure; doubles up to RETRY_MAX_DELAY ...
RETRY_MAX_DELAY = 5.0  # ... so a restarted Redis is used within seconds (workers retry forever)
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
_OUR_TOKEN = re.compile(r"([0-9a-f]{32}):\d+")  # BridgeWorker lock tokens: worker id, counter


class Backoff:
    """Exponential waits between retries of one loop after Redis failures, reset by a success."""

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
        log.warning(
            "%s: redis failing in %s: %s; retrying with backoff (up to %.0fs)",
            self.name,
            where,
            err,
            RETRY_MAX_DELAY,
        )

    def ok(self) -> None:
        """Note a success; logs once when Redis answers again after failures."""
        if self.problem is not None:
            since = time.monotonic() - self.since
            log.warning("%s: redis is back after %.1fs (%s)", self.name, since, self.problem)
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


class Liveness:
    """Lock renewal, the stalled-job check, the heartbeat and reclaiming of one worker.

    The worker owns it and shares with it its connection, its active jobs (by id) and its
    RedisState; `stopping` says when the worker stops, `wake` wakes its idle slots.
    """

    def __init__(
        self,
        client: RedisClient,
        scripts: WorkerScripts,
        worker_id: str,
        *,
        redis: RedisState,
        active: dict[str, Job],
        stopping: Callable[[], bool],
        wake: Callable[[], None],
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.spec = scripts.spec
        self.keys = scripts.keys
        self.worker_id = worker_id
        self.name = scripts.name
        self.redis = redis
        self._active = active
        self._stopping = stopping
        self._wake = wake
        self.heartbeat_key = self.keys.alive(worker_id)
        self.reclaim_checks = 0  # looks for dead workers' jobs so far (tests wait on it)

    async def connect(self, stop: asyncio.Event) -> None:
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

    def tasks(self) -> list[asyncio.Task[None]]:
        """Start the loops: lock renewal, the heartbeat, reclaiming, the stalled-job check."""
        return [
            asyncio.create_task(self._lock_loop()),
            asyncio.create_task(
                self.repeat("the heartbeat", self.heartbeat, lambda: HEARTBEAT_SECONDS)
            ),
            asyncio.create_task(self._reclaim_loop()),
            asyncio.create_task(  # BullMQ's stalled-job check: a dead worker's jobs go back
                self.repeat(
                    "the stalled-job check",
                    self.check_stalled,
                    lambda: self.spec.stalled_interval_ms / 1000,
                )
            ),
        ]

    async def repeat(
        self, what: str, work: Callable[[], Awaitable[object]], every: Callable[[], float]
    ) -> None:
        """Run `work` every `every()` seconds until the worker stops; a failure is logged, not fatal."""
        while not self._stopping():
            try:
                await work()
            except REDIS_FAILURES as err:
                self.redis.failed(err, what)
            except Exception:
                log.exception("%s: unexpected error in %s", self.name, what)
            await asyncio.sleep(every())

    async def _lock_loop(self) -> None:
        """Renew the locks of active jobs every half lock duration (BullMQ's lockRenewTime)."""
        interval = self.spec.lock_duration_ms / 2000
        while not self._stopping() or self._active:
            await asyncio.sleep(interval)
            jobs = list(self._active.values())
            if not jobs:
                continue
            try:
                lost = await self.scripts.extend_locks(jobs).run(self.client)
                for job_id in lost or []:
                    log.warning("%s: lost the lock of job %r", self.name, job_id)
            except REDIS_FAILURES as err:
                self.redis.failed(err, "renewing locks")
            except Exception:
                log.exception("%s: unexpected error renewing locks", self.name)

    async def check_stalled(self) -> None:
        """BullMQ's stalled-job check: jobs whose lock expired go back to wait."""
        stalled = await self.scripts.move_stalled().run(self.client)
        for job_id in stalled or []:
            log.warning("%s: job %r stalled (its worker stopped); back to wait", self.name, job_id)
        if stalled:
            self._wake()

    async def heartbeat(self) -> None:
        """Keep this worker's heartbeat key alive (see HEARTBEAT_TTL_MS)."""
        await self.client.execute("SET", self.heartbeat_key, self.name, "PX", HEARTBEAT_TTL_MS)

    async def clear_heartbeat(self) -> None:
        """Drop the heartbeat key at shutdown (best effort: it expires anyway)."""
        with contextlib.suppress(*REDIS_FAILURES):
            await self.client.execute("DEL", self.heartbeat_key)

    async def other_locks(self) -> list[tuple[str, Any]]:
        """The active jobs this worker is not running, each with its lock's token (or None)."""
        active = await self.client.execute("LRANGE", self.keys["active"], 0, -1)
        ids = [job_id for job_id in active or [] if job_id not in self._active]
        if not ids:
            return []
        locks = await self.client.pipeline([["GET", self.keys.job(i) + ":lock"] for i in ids])
        return list(zip(ids, locks, strict=True))

    async def _reclaim_loop(self) -> None:
        """For one lock duration after start, take back the active jobs of dead workers."""
        deadline = time.monotonic() + self.spec.lock_duration_ms / 1000
        while not self._stopping() and time.monotonic() < deadline:
            try:
                if not await self.reclaim_dead():
                    return
            except REDIS_FAILURES as err:
                self.redis.failed(err, "reclaiming a dead worker's jobs")
            except Exception:
                log.exception("%s: unexpected error reclaiming jobs", self.name)
            await asyncio.sleep(RECLAIM_EVERY_SECONDS)

    async def reclaim_dead(self) -> bool:
        """Release the locks of active jobs whose worker is dead; True while some may yet be.

        Dead: its heartbeat expired and no Redis connection carries its id (a worker that is
        alive but slow still holds its connections; one reconnecting refreshes its heartbeat
        within a second). Locks of other kinds of worker (Node BullMQ) are left to expire.
        """
        self.reclaim_checks += 1
        owned: dict[str, list[tuple[str, str]]] = {}
        for job_id, token in await self.other_locks():
            if token is None:  # its lock expired: stalled for sure, nobody renews it
                owned.setdefault("", []).append((job_id, ""))
                continue
            match = _OUR_TOKEN.fullmatch(token) if isinstance(token, str) else None
            if match and match[1] != self.worker_id:
                owned.setdefault(match[1], []).append((job_id, token))
        if not owned:
            return False
        lockless = owned.pop("", [])
        owners = list(owned)
        dead = await self._dead(owners)
        pairs: list[Arg] = [x for owner in dead for pair in owned[owner] for x in pair]
        pairs += [x for pair in lockless for x in pair]
        if pairs:
            released = await self.scripts.release_dead_locks(pairs).run(self.client)
            if released:  # none: they finished between the reads (no lock, no longer active)
                whose = ", ".join(o[:8] for o in dead) or "(lock expired)"
                log.warning(
                    "%s: took back %s active job(s) of dead worker(s) %s",
                    self.name,
                    released,
                    whose,
                )
                await self.check_stalled()
        return len(dead) < len(owners)

    async def _dead(self, owners: list[str]) -> list[str]:
        """The workers among `owners` whose heartbeat expired and who hold no connection."""
        beats = await self.client.pipeline([["EXISTS", self.keys.alive(owner)] for owner in owners])
        silent = [owner for owner, beat in zip(owners, beats, strict=True) if beat == 0]
        if not silent:
            return []
        try:
            connected = str(await self.client.execute("CLIENT", "LIST"))
        except RedisReplyError:  # CLIENT may be forbidden (ACL, managed Redis)
            connected = ""
        return [owner for owner in silent if not _connected(owner, connected)]
