"""One place that turns a Redis URL into clients: the pipelined wire client (one server, a
primary behind Sentinel, or the slot owner on a Cluster) and the bullmq package's connection."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bridge.cluster import bullmq_cluster_connection
from bridge.cluster_client import ClusterClient
from bridge.redis_client import RedisClient
from bridge.sentinel import bullmq_connection as sentinel_connection
from orderflow.redis_url import is_cluster_url


def redis_client(url: str, name: str = "", prefix: str = "") -> RedisClient:
    """The wire client for `url`. On a Cluster it is bound to the slot of `prefix` (the queue
    prefix, with its hash tag; RedisUrlError naming ORDERFLOW_QUEUE_PREFIX when it has none);
    a client that only PINGs may leave it empty and reach any node."""
    if is_cluster_url(url):
        return ClusterClient(url, name, prefix or "{orderflow-check}")
    return RedisClient(url, name)


def bullmq_connection(redis_url: str) -> str | Redis | RedisCluster:
    """What the bullmq package's Queue is given: the URL for one server, a redis-py client that
    follows the primary behind Sentinel, a redis-py cluster client on a Cluster."""
    if is_cluster_url(redis_url):
        return bullmq_cluster_connection(redis_url)
    return sentinel_connection(redis_url)
