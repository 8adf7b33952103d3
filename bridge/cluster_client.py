"""The pipelined client on a Redis Cluster: one connection to the owner of the prefix's slot.

Every key under a hash-tagged prefix (`{bull}:...`) is in one slot, so the commands of all jobs
still go back to back on one connection, as on a single server. Replies that say a command did
not run there are followed (the command runs once, wherever the slot is now):

- MOVED slot host:port: the slot has a new owner; the connection moves there (commands already
  written to the old node get their own MOVED and follow), the command is sent again;
- ASK slot host:port: the slot is being migrated and this key is on the target already: ASKING
  and the command go to the target, once;
- TRYAGAIN (a multi-key script whose keys are split by a migration) and CLUSTERDOWN: again after
  a short pause. A transaction that meets ASK waits the same way (ASKING cannot precede MULTI).

A lost connection is not retried (the command may have run: the caller decides, as on a single
server); the next call reads the slot map again. Keys of another slot are redirected like any
MOVED, to a connection per node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bridge.cluster import Address, Redirect, SlotLocator, parse_redirect, slot_of
from bridge.redis_client import (
    Arg,
    RedisClient,
    RedisReplyError,
    _Protocol,
    encode_command,
)
from orderflow.redis_url import parse_cluster_url

MAX_REDIRECTS = 16  # as redis-py and ioredis: a slot moving this often is a broken cluster
RETRY_PAUSE_SECONDS = 0.05  # after TRYAGAIN / CLUSTERDOWN / ASK in a transaction, growing
_ASKING = encode_command(["ASKING"])
_MULTI = encode_command(["MULTI"])
_EXEC = encode_command(["EXEC"])


class _ClusterProtocol(_Protocol):
    """A connection that, once left for a new slot owner, closes when its last reply is in."""

    retiring = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.retiring and not self.waiters and self.transport is not None:
            self.transport.close()

    def retire(self) -> None:
        self.retiring = True
        if not self.waiters and self.transport is not None:
            self.transport.close()


def _redirect(reply: Any) -> Redirect | None:
    return parse_redirect(str(reply)) if isinstance(reply, RedisReplyError) else None


class ClusterClient(RedisClient):
    """RedisClient for a `redis+cluster://` URL, bound to the slot of `prefix`."""

    def __init__(self, url: str, name: str, prefix: str) -> None:
        target = parse_cluster_url(url)
        query = "&".join(f"{k}={v}" for k, v in target.options)
        super().__init__(f"{'rediss' if target.tls else 'redis'}://localhost/0?{query}", name)
        self.password, self.username = target.password, target.username
        self.host, self.port = "", 0  # the slot owner's, once the slot map names it
        self.slots = SlotLocator(target)
        self.slot = slot_of(prefix)  # RedisUrlError naming the setting when untagged
        self._nodes: dict[Address, _Protocol] = {}  # connections to other nodes (redirects)
        self.redirects = 0  # how many replies were followed elsewhere (tests, logs)

    async def _ensure(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None:
            return proto
        async with self._lock:
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            if self.closed:
                raise ConnectionError("redis client is closed")
            # after a lost connection the map may be stale (a failover): read it again
            address = await self.slots.owner(self.slot, refresh=self._proto is not None)
            self._proto = await self._connect(*address, factory=_ClusterProtocol)
            self.host, self.port = address
            return self._proto

    async def _node(self, address: Address) -> _Protocol:
        if address == (self.host, self.port) and self._proto is not None:
            if self._proto.lost is None:
                return self._proto
        proto = self._nodes.get(address)
        if proto is None or proto.lost is not None:
            proto = await self._connect(*address, factory=_ClusterProtocol)
            self._nodes[address] = proto
        return proto

    async def _rehome(self, address: Address) -> _Protocol:
        """The slot moved to `address`: new commands go there; the old connection retires."""
        async with self._lock:
            if (self.host, self.port) != address or self._proto is None:
                old, self._proto = self._proto, None
                self._proto = self._nodes.pop(address, None)
                if self._proto is None or self._proto.lost is not None:
                    self._proto = await self._connect(*address, factory=_ClusterProtocol)
                self.host, self.port = address
                if isinstance(old, _ClusterProtocol):
                    old.retire()
            return self._proto

    async def _on(self, proto: _Protocol, payloads: list[bytes]) -> Any:
        """The last reply of `payloads` on `proto`; NOSCRIPT loads the scripts there first."""
        reply = (await self._send_batch(proto, payloads))[-1]
        if isinstance(reply, RedisReplyError) and str(reply).startswith("NOSCRIPT"):
            await self._send(proto, [["SCRIPT", "LOAD", s.source] for s in self._scripts.values()])
            reply = (await self._send_batch(proto, payloads))[-1]
        return reply

    async def _follow(self, payload: bytes, reply: Any) -> Any:
        """`reply` to `payload`, after following every redirect it asks for."""
        for attempt in range(MAX_REDIRECTS):
            redirect = _redirect(reply)
            if redirect is None:
                return reply
            self.redirects += 1
            if redirect.kind == "MOVED" and redirect.address is not None:
                self.slots.moved(redirect.slot, redirect.address)
                if redirect.slot == self.slot:
                    proto = await self._rehome(redirect.address)
                else:
                    proto = await self._node(redirect.address)
                reply = await self._on(proto, [payload])
            elif redirect.kind == "ASK" and redirect.address is not None:
                reply = await self._on(await self._node(redirect.address), [_ASKING, payload])
            else:
                await asyncio.sleep(RETRY_PAUSE_SECONDS * (attempt + 1))
                reply = await self._on(await self._ensure(), [payload])
        if _redirect(reply) is not None:
            raise ConnectionError(f"Redis Cluster redirected a command {MAX_REDIRECTS} times")
        return reply

    async def execute(self, *args: Arg) -> Any:
        return await self._send_one(encode_command(args))

    async def _send_one(self, payload: bytes) -> Any:
        reply = await self._follow(payload, (await self.send_raw([payload]))[0])
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def send_raw(self, payloads: Sequence[bytes]) -> list[Any]:
        """The replies on the slot owner's connection, no redirect followed."""
        return await self._send_batch(await self._ensure(), payloads)

    async def send_encoded(self, payloads: Sequence[bytes]) -> list[Any]:
        replies = await self.send_raw(payloads)
        for i, reply in enumerate(replies):
            if _redirect(reply) is not None:  # it did not run: run it where the slot is
                replies[i] = await self._follow(payloads[i], reply)
        return replies

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        return await self.send_encoded([encode_command(c) for c in commands])

    async def transaction(self, commands: Sequence[Sequence[Arg] | bytes]) -> list[Any]:
        encoded = [c if isinstance(c, bytes) else encode_command(c) for c in commands]
        for attempt in range(MAX_REDIRECTS):
            replies = await self.send_raw([_MULTI, *encoded, _EXEC])
            redirect = next(filter(None, map(_redirect, replies[1:-1])), None)
            if redirect is None:
                break
            self.redirects += 1  # EXECABORT: nothing ran
            if redirect.kind == "MOVED" and redirect.address is not None:
                if redirect.slot != self.slot:
                    raise RedisReplyError(f"CROSSSLOT transaction outside slot {self.slot}")
                self.slots.moved(redirect.slot, redirect.address)
                await self._rehome(redirect.address)
            else:
                await asyncio.sleep(RETRY_PAUSE_SECONDS * (attempt + 1))
        for reply in replies:
            if isinstance(reply, BaseException) and not isinstance(reply, RedisReplyError):
                raise reply
        if isinstance(replies[-1], BaseException):
            raise replies[-1]
        return list(replies[-1])

    async def close(self) -> None:
        await super().close()
        for proto in self._nodes.values():
            if proto.transport is not None:
                proto.transport.close()
        self._nodes.clear()
        await self.slots.close()
