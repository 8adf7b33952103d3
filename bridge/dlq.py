"""The dead-letter queue of a bridge queue: list, re-drive and purge jobs that failed for good.

The worker writes an entry in the same Lua call that moves the job to BullMQ's failed set
(bridge.scripts.dead_letter_script), so a job is dead-lettered if and only if it failed for good.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import UnknownDeadLetterError
from bridge.producer import QueueProducer
from bridge.redis_client import RedisClient
from bridge.scripts import Keys, bullmq_script, dlq_prune_script
from bridge.specs import QueueSpec


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered job with what is needed to understand and re-drive it."""

    id: str
    name: str
    queue: str
    data: Any
    failed_reason: str
    attempts_made: int
    failed_at: int  # ms since the epoch
    unrecoverable: bool
    stacktrace: list[str] = field(default_factory=list)
    opts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> DeadLetter:
        """Parse an entry as the worker stored it."""
        e = json.loads(text)
        return cls(
            id=e["id"], name=e["name"], queue=e["queue"], data=e.get("data"),
            failed_reason=e.get("failedReason", ""), attempts_made=int(e.get("attemptsMade", 0)),
            failed_at=int(e.get("failedAt", 0)), unrecoverable=bool(e.get("unrecoverable")),
            stacktrace=list(e.get("stacktrace") or []), opts=dict(e.get("opts") or {}),
        )  # fmt: skip


class DeadLetterQueue:
    """Reads and manages the DLQ of one queue."""

    def __init__(self, spec: QueueSpec, client: RedisClient) -> None:
        self.spec = spec
        self.client = client
        self.keys = Keys(spec.prefix, spec.name)
        self.entries_key, self.index_key, self.detached_key = spec.dlq_keys

    async def prune(self, *job_ids: str) -> int:
        """Drop entries (of `job_ids`, or all) whose job is no longer failed: retried by a Node
        tool or bull-board and waiting, active, completed or removed since; returns how many.
        Every read does it first.

        Our worker drops the entry when it completes such a job; a Node worker cannot.
        """
        keys: list[Any] = [self.entries_key, self.index_key, self.detached_key, self.keys["failed"]]
        return int(await self.client.run(dlq_prune_script(), keys, [self.keys.base, *job_ids]))

    async def count(self) -> int:
        """How many jobs are dead-lettered (and still failed)."""
        await self.prune()
        return int(await self.client.execute("ZCARD", self.index_key))

    async def list(self, offset: int = 0, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered jobs (still failed), oldest failure first."""
        await self.prune()
        ids = await self.client.execute("ZRANGE", self.index_key, offset, offset + limit - 1)
        if not ids:
            return []
        raw = await self.client.execute("HMGET", self.entries_key, *ids)
        return [DeadLetter.from_json(text) for text in raw if text]

    async def get(self, job_id: str) -> DeadLetter:
        """One entry by job id."""
        await self.prune(job_id)
        text = await self.client.execute("HGET", self.entries_key, job_id)
        if not text:
            raise UnknownDeadLetterError(self.spec.dlq, job_id)
        return DeadLetter.from_json(text)

    async def redrive(self, job_id: str) -> str:
        """Give the job a fresh set of attempts under the same id, and drop its DLQ entry.

        The entry goes first: once the job waits again, a worker may fail it for good before
        this returns, and the entry it writes then must stay. If the job cannot be re-driven,
        the entry is put back.
        """
        entry = await self.get(job_id)
        raw, score = await self.client.transaction(
            [["HGET", self.entries_key, job_id], ["ZSCORE", self.index_key, job_id]]
        )
        await self._drop([job_id])
        try:
            await self._requeue(job_id, entry)
        except BaseException:
            await self.client.transaction(
                [["HSETNX", self.entries_key, job_id, raw],
                 ["ZADD", self.index_key, "NX", score, job_id]]
            )  # fmt: skip
            raise
        return job_id

    async def _requeue(self, job_id: str, entry: DeadLetter) -> None:
        k = self.keys
        in_failed = await self.client.execute("ZSCORE", k["failed"], job_id)
        if in_failed is not None:
            keys = [k.job(job_id), k["events"], k["failed"], k["wait"], k["meta"], k["active"],
                    k["marker"], k["prioritized"], k["pc"]]  # fmt: skip
            result = await self.client.run(
                bullmq_script("reprocessJob-9.lua"),
                keys,
                [job_id, "LPUSH", "failedReason", "failed", "1", "1"],
            )
            if isinstance(result, int) and result < 0:
                raise UnknownDeadLetterError(self.spec.dlq, f"{job_id} (BullMQ code {result})")
        else:  # the failed job was cleaned away: add it again with the same id
            producer = QueueProducer(self.spec, self.client)
            await producer.add(entry.name, entry.data, {**entry.opts, "jobId": job_id})

    async def redrive_all(self) -> builtins.list[str]:
        """Re-drive every dead-lettered job; returns their ids."""
        await self.prune()
        ids = await self.client.execute("ZRANGE", self.index_key, 0, -1)
        return [await self.redrive(job_id) for job_id in ids]

    async def purge(self, job_id: str | None = None, *, remove_jobs: bool = True) -> int:
        """Forget one entry (or all); also delete the failed jobs themselves unless told not to."""
        ids = [job_id] if job_id else await self.client.execute("ZRANGE", self.index_key, 0, -1)
        if remove_jobs:
            k = self.keys
            for jid in ids:
                if await self.client.execute("ZSCORE", k["failed"], jid) is not None:
                    await self.client.run(
                        bullmq_script("removeJob-2.lua"), [k.job(jid), k["repeat"]],
                        [jid, "1", k.base],
                    )  # fmt: skip
        return await self._drop(ids)

    async def _drop(self, ids: builtins.list[str]) -> int:
        if not ids:
            return 0
        replies = await self.client.transaction(
            [["HDEL", self.entries_key, *ids], ["ZREM", self.index_key, *ids],
             ["SREM", self.detached_key, *ids]]
        )  # fmt: skip
        return int(replies[1])
