"""QueueProducer: BullMQ's `Queue.add(name, data, opts)` and `addBulk`, with the spec's defaults."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from bridge.connect import redis_client
from bridge.errors import InvalidJobOptionsError, PayloadRejectedError
from bridge.guard import PayloadGuard
from bridge.redis_client import Arg, PreparedCall, RedisClient, RedisReplyError
from bridge.scripts import Keys, bullmq_script
from bridge.specs import QueueSpec
from bridge.tracing import inject_trace, trace_current, traced_add

PRIORITY_LIMIT = 2**21  # BullMQ's highest priority value (it packs priority into a zset score)
BACKOFF_TYPES = ("fixed", "exponential")  # built in; any other type needs a worker strategy
JS_SAFE_DIGITS = 15  # JavaScript's Number keeps 15 significant digits exactly
_JS_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")  # what `${parseInt(id, 10)}` gives back unchanged
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A job's hash is <prefix>:<queue>:<id>, beside the queue's own keys: an id equal to one of
# their names ("id", "meta", "wait" ...) would overwrite it and break every fetch (WRONGTYPE)
QUEUE_KEY_NAMES = frozenset(
    {"active", "wait", "waiting-children", "paused", "completed", "failed", "delayed", "repeat",
     "stalled", "limiter", "prioritized", "id", "stalled-check", "meta", "pc", "events",
     "marker", "de", "orderflow-rate"}
)  # fmt: skip


def job_id_problem(job_id: str) -> str:
    """Why `job_id` cannot be a custom job id ("" if it can), as Node BullMQ's Job checks it.

    Node refuses integers (`${parseInt(id, 10)}` === id) and ids with ':' (they would read as
    its legacy repeat ids; this producer refuses even those). Control characters (newline, NUL)
    are refused too: they end up in Redis keys, logs and the dashboard.
    """
    if not job_id:
        return "cannot be empty"
    if _JS_INTEGER.fullmatch(job_id) and job_id != "-0":
        digits = job_id.lstrip("-")
        if len(digits) <= JS_SAFE_DIGITS:  # longer ones do not survive parseInt's round trip
            return "cannot be an integer (Node BullMQ refuses numeric custom ids)"
    if ":" in job_id:
        return "cannot contain ':' (Node BullMQ refuses it in custom ids)"
    if job_id in QUEUE_KEY_NAMES:
        return "names one of the queue's own keys (its job hash would overwrite that key)"
    if _CONTROL.search(job_id):
        return "cannot contain a control character (newline, NUL ...)"
    return ""


def check_job_id(job_id: str, queue: str = "") -> None:
    """Raise InvalidJobOptionsError, naming the queue and the (escaped) id, if it is refused."""
    if why := job_id_problem(job_id):
        where = f"{queue}: " if queue else ""
        raise InvalidJobOptionsError(f"{where}custom jobId {job_id!r} {why}")


@dataclass(frozen=True)
class BulkJob:
    """One entry of `add_bulk`, as in BullMQ's `addBulk([{name, data, opts}])`."""

    name: str
    data: Any
    opts: Mapping[str, Any] = field(default_factory=dict)


def normalize_opts(spec: QueueSpec, opts: Mapping[str, Any] | None) -> dict[str, Any]:
    """Spec defaults overlaid with `opts`, checked the way BullMQ's Job constructor checks them."""
    merged = spec.job_defaults()
    merged.update({k: v for k, v in (opts or {}).items() if v is not None})
    job_id = merged.get("jobId")
    if job_id is not None:
        job_id = merged["jobId"] = str(job_id)
        check_job_id(job_id, spec.name)
    backoff = merged.get("backoff")
    if isinstance(backoff, int | float) and not isinstance(backoff, bool):
        merged["backoff"] = {"type": "fixed", "delay": int(backoff)}
    elif backoff is not None and not (isinstance(backoff, Mapping) and backoff.get("type")):
        raise InvalidJobOptionsError(f"backoff {backoff!r} needs a type (fixed, exponential, ...)")
    for name in ("delay", "priority", "attempts"):
        value = merged.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidJobOptionsError(f"{name} must be a non-negative integer, not {value!r}")
    if merged.get("priority", 0) > PRIORITY_LIMIT:
        raise InvalidJobOptionsError(f"priority must be between 0 and {PRIORITY_LIMIT}")
    return merged


class QueueProducer:
    """Adds jobs to one bridge queue, exactly as a Node BullMQ `Queue` would."""

    def __init__(self, spec: QueueSpec, client: RedisClient) -> None:
        self.spec = spec
        self.client = client
        self.keys = Keys(spec.prefix, spec.name)
        self.guard = PayloadGuard(spec.name, spec.max_payload_bytes, spec.system_fields)
        self._loaded = False
        # most adds use the spec's options as they are: check and pack them once
        self._defaults = normalize_opts(spec, None)
        self._packed_defaults = msgpack.packb(self._defaults, use_bin_type=True)
        k = self.keys
        # the add scripts with their keys encoded once: a job pays only for its three args
        self._standard = _prepared(
            "addStandardJob-9.lua",
            [k[n] for n in ("wait", "paused", "meta", "id", "completed", "delayed", "active",
                            "events", "marker")],
        )  # fmt: skip
        self._delayed = _prepared(
            "addDelayedJob-6.lua",
            [k[n] for n in ("marker", "meta", "id", "delayed", "completed", "events")],
        )
        self._prioritized = _prepared(
            "addPrioritizedJob-9.lua",
            [k[n] for n in ("marker", "meta", "id", "prioritized", "delayed", "completed",
                            "active", "events", "pc")],
        )  # fmt: skip
        self._packer = msgpack.Packer(use_bin_type=True)  # msgpack.packb makes one per call
        # the start of addJob's packed args: a 9-element array, then the key prefix
        self._args_head = b"\x99" + msgpack.packb(k.base, use_bin_type=True)

    @classmethod
    def connect(cls, spec: QueueSpec, redis_url: str) -> QueueProducer:
        """A producer with its own connection (opened on first use)."""
        return cls(
            spec,
            redis_client(redis_url, name=f"orderflow:producer:{spec.name}", prefix=spec.prefix),
        )

    def _command(
        self, name: str, data: Any, opts: Mapping[str, Any] | None, traced: bool = True
    ) -> bytes:
        """The encoded add command of one job; `traced`: a trace context may be current."""
        if opts:
            final = normalize_opts(self.spec, opts)
        else:
            final = dict(self._defaults) if traced else self._defaults
        if traced:
            inject_trace(final)
        job_id = final.get("jobId")
        try:
            encoded = json.dumps(data, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as err:  # NaN, Infinity, a set, an object ...
            raise PayloadRejectedError(
                self.spec.name, name, job_id, f"data is not plain JSON ({err})"
            ) from err
        self.guard.check(name, job_id, data, encoded)
        timestamp = int(time.time() * 1000)
        # [prefix, job id, name, timestamp, parentKey, waitChildrenKey, parentDependenciesKey,
        #  parent, repeatJobKey], as BullMQ's Queue packs them
        pack = self._packer.pack
        packed_args = b"".join(
            (self._args_head, pack(job_id or ""), pack(name), pack(timestamp), _NILS)
        )
        packed_opts = (
            self._packed_defaults
            if final is self._defaults or final == self._defaults
            else msgpack.packb(final, use_bin_type=True)
        )
        if final.get("delay"):
            prepared = self._delayed
        elif final.get("priority"):
            prepared = self._prioritized
        else:
            prepared = self._standard
        return prepared.encode([packed_args, encoded, packed_opts])

    def _scripts(self) -> None:
        for prepared in (self._standard, self._delayed, self._prioritized):
            self.client.register(prepared.script)

    @traced_add
    async def add(self, name: str, data: Any, opts: Mapping[str, Any] | None = None) -> str:
        """Add one job, exactly as Node BullMQ's `Queue.add` would; returns its id.

        Args:
            name: The job name (the queue's processor dispatches on it).
            data: The job's data: plain JSON, screened by the queue's payload guard.
            opts: BullMQ job options (jobId, delay, priority, attempts, backoff,
                removeOnComplete, removeOnFail ...) over the spec's defaults.

        Returns:
            The job's id; with an existing jobId, that job's id, and nothing new is added.

        Raises:
            InvalidJobOptionsError: The options are refused (a jobId Node BullMQ refuses, a
                backoff without a type, a negative delay, priority or attempts ...).
            PayloadRejectedError: The data is not plain JSON, is over the spec's
                max_payload_bytes, or holds what looks like a secret (bridge/guard.py).
            ConnectionError: Redis could not be reached (the job may or may not be added; with
                a jobId, adding it again is safe).
            RedisReplyError: Redis answered with an error (e.g. READONLY, OOM).
        """
        command = self._command(name, data, opts)
        self._scripts()
        [result] = await self.client.send_encoded([command])
        if _noscript(result):
            await self.client.load_scripts()
            [result] = await self.client.send_encoded([command])
        return _job_id(result, name)

    async def add_bulk(self, jobs: Sequence[BulkJob | Mapping[str, Any]]) -> list[str]:
        """Add many jobs atomically in one round trip (BullMQ `addBulk`); returns their ids."""
        commands = []
        traced = trace_current()  # once for the batch: no trace context, nothing to inject
        for job in jobs:
            if isinstance(job, BulkJob):
                commands.append(self._command(job.name, job.data, job.opts, traced))
            else:
                commands.append(self._command(job["name"], job["data"], job.get("opts"), traced))
        self._scripts()
        if not self._loaded:  # EVALSHA inside MULTI cannot fall back to loading the script
            await self.client.load_scripts()
            self._loaded = True
        replies = await self.client.transaction(commands)
        missing = [i for i, r in enumerate(replies) if _noscript(r)]
        if missing:  # Redis lost its script cache (SCRIPT FLUSH): those adds did not happen
            await self.client.load_scripts()
            retried = await self.client.transaction([commands[i] for i in missing])
            for i, reply in zip(missing, retried, strict=True):
                replies[i] = reply
        return [_job_id(reply, "addBulk") for reply in replies]

    async def close(self) -> None:
        """Close the producer's connection."""
        await self.client.close()


def _prepared(filename: str, keys: list[Arg]) -> PreparedCall:
    return PreparedCall.of(bullmq_script(filename), len(keys), keys)


_NILS = b"\xc0" * 5  # five msgpack nils: no parent, no repeat job


def _noscript(reply: Any) -> bool:
    return isinstance(reply, RedisReplyError) and str(reply).startswith("NOSCRIPT")


def _job_id(result: Any, name: str) -> str:
    if isinstance(result, BaseException):
        raise result
    if isinstance(result, int) and result < 0:
        raise InvalidJobOptionsError(f"adding {name} failed with BullMQ code {result}")
    return str(result)
