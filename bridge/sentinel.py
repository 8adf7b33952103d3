"""Where the primary is, asked of Redis Sentinel through redis-py (`redis.asyncio.sentinel`).

The pipelined wire client (bridge/redis_client.py) stays on the hot path: it asks a
`PrimaryLocator` for the primary's address each time it (re)connects, and drops its connection
on a READONLY reply or a node that is no longer the primary, so the next call finds the new one.
redis-py also gives the bullmq package's Queue (bridge/admin.py) a client that follows the
primary (`bullmq_connection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.exceptions import RedisError as RedisPyError

from orderflow.redis_url import (
    SentinelUrl,
    is_sentinel_url,
    parse_sentinel_url,
    redis_py_options,
)

# One question to one Sentinel: a dead one is skipped after this long, so a producer fails
# fast (ConnectionError) rather than hanging while the Sentinels agree on a new primary
SENTINEL_SECONDS = 1.0
WATCH_RETRY_SECONDS = 1.0  # a lost subscription to the Sentinel's events is made again after this
# From the moment a Sentinel starts promoting a replica until it announces the new primary, the
# old one still answers as primary and every write it takes is lost: no connection is made then
# (callers get ConnectionError at once), for at most this long
HOLD_SECONDS = 5.0
PROMOTING = "+failover-state-send-slaveof-noone"  # "slave <name> <ip> <port> @ <master> ..."
SWITCHED = "+switch-master"  # "<master> <old ip> <old port> <new ip> <new port>"
ABORTED = "-failover-abort-*"

log = logging.getLogger("orderflow.bridge")


class PrimaryLocator:
    """Asks the Sentinels of a `redis+sentinel://` URL which node is the primary now."""

    def __init__(self, target: SentinelUrl) -> None:
        self.target = target
        self._sentinel: Sentinel | None = None
        self.lookups = 0  # how many times the primary was looked up (tests, logs)
        self._watcher: asyncio.Task[None] | None = None
        self._hold_until = 0.0  # no lookups before this (monotonic): a promotion is under way

    def _client(self) -> Sentinel:
        if self._sentinel is None:
            self._sentinel = Sentinel(
                list(self.target.sentinels),
                sentinel_kwargs={
                    "password": self.target.sentinel_password,
                    "socket_timeout": SENTINEL_SECONDS,
                    "socket_connect_timeout": SENTINEL_SECONDS,
                },
            )
        return self._sentinel

    async def primary(self) -> tuple[str, int]:
        """The primary's (host, port); ConnectionError while no Sentinel names a healthy one."""
        self.lookups += 1
        if time.monotonic() < self._hold_until:
            raise ConnectionError(f"Sentinel is promoting a new primary for {self.target.master!r}")
        try:
            host, port = await self._client().discover_master(self.target.master)
        except MasterNotFoundError:
            # never the redis-py message: it lists each Sentinel's error, which we do not vet
            raise ConnectionError(
                f"no Sentinel names a healthy primary for {self.target.master!r} yet"
                " (failing over, or every Sentinel unreachable)"
            ) from None
        except (RedisPyError, OSError) as err:
            raise ConnectionError(f"Sentinel lookup failed ({type(err).__name__})") from None
        return str(host), int(port)

    def watch(self, switched: Callable[[], None]) -> None:
        """Call `switched` whenever a Sentinel announces a new primary (+switch-master), as
        ioredis's failoverDetector does: a manual failover leaves the old primary taking
        writes (which it then loses) until the Sentinel demotes it, about 10 s later."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(switched))

    async def _watch(self, switched: Callable[[], None]) -> None:
        turn = 0
        while True:
            host, port = self.target.sentinels[turn % len(self.target.sentinels)]
            turn += 1
            client = Redis(
                host=host,
                port=port,
                password=self.target.sentinel_password,
                socket_connect_timeout=SENTINEL_SECONDS,
                socket_keepalive=True,
            )
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(PROMOTING, SWITCHED)
                    await pubsub.psubscribe(ABORTED)
                    async for message in pubsub.listen():
                        if message.get("type") in ("message", "pmessage"):
                            self._event(message, switched)
            except (RedisPyError, OSError):
                await asyncio.sleep(WATCH_RETRY_SECONDS)
            finally:
                with contextlib.suppress(RedisPyError, OSError):
                    await client.aclose()

    def _event(self, message: dict[str, Any], switched: Callable[[], None]) -> None:
        channel = message.get("channel", b"")
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        data = message.get("data")
        words = data.decode(errors="replace").split() if isinstance(data, bytes) else []
        master = self.target.master
        if channel == SWITCHED and words[:1] == [master]:
            self._hold_until = 0.0
            log.warning("Sentinel: %s has a new primary", master)
            switched()
        elif (
            channel == PROMOTING and "@" in words and words[words.index("@") + 1 :][:1] == [master]
        ):
            self._hold_until = time.monotonic() + HOLD_SECONDS
            log.warning("Sentinel: promoting a replica of %s; leaving the old primary", master)
            switched()
        elif channel.startswith("-failover-abort") and master in words:
            self._hold_until = 0.0

    async def close(self) -> None:
        """Stop watching and close the connections to the Sentinels."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()
            self._sentinel = None


def bullmq_connection(redis_url: str) -> str | Redis:
    """What the bullmq package's Queue is given: the URL itself for one server, a redis-py
    client that follows the primary for a Sentinel URL."""
    if not is_sentinel_url(redis_url):
        return redis_url
    target = parse_sentinel_url(redis_url)
    options: dict[str, Any] = {"decode_responses": True, "db": target.db}
    options |= redis_py_options(target)
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "password": target.sentinel_password,
            "socket_timeout": SENTINEL_SECONDS,
            "socket_connect_timeout": SENTINEL_SECONDS,
        },
    )
    return sentinel.master_for(target.master, **options)
