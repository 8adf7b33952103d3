"""Which node of a Redis Cluster owns a slot, asked through redis-py (`redis.asyncio.cluster`).

Every key of a queue carries the prefix's hash tag (`{bull}:email-queue:wait`), so all of them
are in one slot; the pipelined wire client (bridge/cluster_client.py) keeps one connection to
that slot's owner and asks a `SlotLocator` where it is at each (re)connection. A MOVED reply
names the new owner at once (`moved`); a lost connection re-reads the slot map. redis-py also
gives the bullmq package's Queue (bridge/admin.py) a cluster client (`bullmq_cluster_connection`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError as RedisPyError

from orderflow.redis_url import (
    ClusterUrl,
    check_cluster_prefix,
    parse_cluster_url,
    redis_py_options,
)

LOOKUP_SECONDS = 2.0  # one seed node's answer to CLUSTER SLOTS: a dead one is skipped after this
Address = tuple[str, int]
# replies that say the command did not run here: run it elsewhere, or again in a moment
REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


@dataclass(frozen=True)
class Redirect:
    """A MOVED/ASK reply (slot and node), or TRYAGAIN/CLUSTERDOWN (retry in a moment)."""

    kind: str
    slot: int = -1
    address: Address | None = None


def parse_redirect(text: str) -> Redirect | None:
    """The redirect an error reply asks for, or None (an ordinary error)."""
    kind, _, rest = text.partition(" ")
    if kind not in REDIRECTS:
        return None
    if kind in ("MOVED", "ASK"):
        slot, _, where = rest.partition(" ")
        host, _, port = where.rpartition(":")
        if slot.isdigit() and port.isdigit():
            return Redirect(kind, int(slot), (host.strip("[]"), int(port)))
        return None
    return Redirect(kind)


def slot_of(prefix: str) -> int:
    """The slot of every key under `prefix`; RedisUrlError when it has no hash tag."""
    check_cluster_prefix(prefix)
    return int(key_slot(prefix.encode()))


def _cluster(target: ClusterUrl, **extra: Any) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        socket_timeout=LOOKUP_SECONDS,
        socket_connect_timeout=LOOKUP_SECONDS,
        **redis_py_options(target),
        **extra,
    )


class SlotLocator:
    """The owner of a slot, from redis-py's slot map of the cluster a URL names."""

    def __init__(self, target: ClusterUrl) -> None:
        self.target = target
        self._cluster: RedisCluster | None = None
        self._moved: dict[int, Address] = {}  # what MOVED replies said since the last map
        self.lookups = 0  # how many times the slot map was read (tests, logs)

    async def owner(self, slot: int, refresh: bool = False) -> Address:
        """The slot's primary; `refresh` re-reads the map (after a lost connection).
        ConnectionError while no seed node answers."""
        if not refresh and slot in self._moved:
            return self._moved[slot]
        try:
            if self._cluster is None:
                self._cluster = _cluster(self.target)
                await self._cluster.initialize()
                self.lookups += 1
            elif refresh or not self._cluster.nodes_manager.slots_cache:
                await self._cluster.nodes_manager.initialize()
                self.lookups += 1
            node = self._cluster.nodes_manager.get_node_from_slot(slot)
            if refresh:
                self._moved.clear()
        except (RedisPyError, OSError) as err:
            # never redis-py's message: it may name the nodes' addresses and options
            raise ConnectionError(
                f"Redis Cluster slot map unavailable ({type(err).__name__})"
            ) from None
        return str(node.host), int(node.port)

    def moved(self, slot: int, address: Address) -> None:
        """A node answered MOVED: the slot's owner is `address` from now on."""
        self._moved[slot] = address

    async def close(self) -> None:
        """Close redis-py's connections to the nodes."""
        if self._cluster is not None:
            with contextlib.suppress(RedisPyError, OSError):
                await self._cluster.aclose()
            self._cluster = None


def bullmq_cluster_connection(redis_url: str) -> RedisCluster:
    """A redis-py cluster client for the bullmq package's Queue (it follows MOVED itself)."""
    return _cluster(parse_cluster_url(redis_url), decode_responses=True)
