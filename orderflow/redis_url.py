"""Redis URLs: one server (`redis://`, `rediss://`) or a primary found through Sentinel.

Sentinel: `redis+sentinel://[:SENTINELPASS@]host:26379,host2:26379/MASTERNAME/DB` (TLS to the
data nodes: `rediss+sentinel://`). The userinfo is the Sentinels' password; the data nodes'
password (and ACL user) ride in the query, `?password=...&username=...`, percent-encoded, so
the two stay apart; `normalize_redis_url` writes them from the settings. Parse errors name the
setting and never echo the URL (it holds passwords).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SETTING = "ORDERFLOW_REDIS_URL"
DEFAULT_SENTINEL_PORT = 26379


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message names the setting, never a password."""


@dataclass(frozen=True)
class SentinelUrl:
    """Where the Sentinels are, which primary they watch, and how to reach the data nodes."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    tls: bool = False
    sentinel_password: str | None = None
    password: str | None = None  # the data nodes'
    username: str | None = None  # the data nodes' ACL user
    options: tuple[tuple[str, str], ...] = ()  # other query options (ssl_ca_certs ...)

    def option(self, name: str) -> str | None:
        """A query option by name, or None."""
        return dict(self.options).get(name)


def is_sentinel_url(url: str) -> bool:
    """True for `redis+sentinel://` and `rediss+sentinel://` URLs."""
    return url.partition("://")[0] in SENTINEL_SCHEMES


def parse_sentinel_url(url: str, setting: str = SETTING) -> SentinelUrl:
    """Split a Sentinel URL; RedisUrlError (naming `setting`, not the URL) when it is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES:
        raise RedisUrlError(f"{setting} is not a redis+sentinel:// URL")
    rest, _, query = rest.partition("?")
    userinfo, at, hosts_path = rest.rpartition("@")
    if not at:
        userinfo, hosts_path = "", rest
    hosts, _, path = hosts_path.partition("/")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise RedisUrlError(
            f"{setting} names no primary: redis+sentinel://host:26379[,host2:26379]/NAME[/DB]"
        )
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise RedisUrlError(
            f"{setting}: after the primary's name only a database number may follow"
        )
    sentinels = tuple(_host_port(h, setting) for h in hosts.split(",") if h.strip())
    if not sentinels:
        raise RedisUrlError(f"{setting} lists no Sentinel host")
    secret = unquote(userinfo.partition(":")[2]) if userinfo else ""
    fields = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    password = fields.pop("password", "") or None
    username = fields.pop("username", "") or None
    return SentinelUrl(
        sentinels=sentinels,
        master=unquote(parts[0]),
        db=int(parts[1]) if len(parts) == 2 else 0,
        tls=scheme == "rediss+sentinel",
        sentinel_password=secret or None,
        password=password,
        username=username,
        options=tuple(sorted(fields.items())),
    )


def _host_port(entry: str, setting: str) -> tuple[str, int]:
    host, colon, port = entry.strip().rpartition(":")
    if not colon:
        return entry.strip(), DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not host:
        raise RedisUrlError(f"{setting}: a Sentinel address is not host:port")
    return host.strip("[]"), int(port)


def sentinel_url(target: SentinelUrl) -> str:
    """The URL of `target` again, every secret percent-encoded."""
    scheme = SENTINEL_SCHEMES[1] if target.tls else SENTINEL_SCHEMES[0]
    auth = f":{quote(target.sentinel_password, safe='')}@" if target.sentinel_password else ""
    hosts = ",".join(f"{h}:{p}" for h, p in target.sentinels)
    query = dict(target.options)
    if target.username:
        query["username"] = target.username
    if target.password:
        query["password"] = target.password
    tail = f"?{urlencode(query, quote_via=quote, safe='')}" if query else ""
    return f"{scheme}://{auth}{hosts}/{quote(target.master, safe='')}/{target.db}{tail}"


def redact_sentinel_url(url: str) -> str:
    """A Sentinel URL without any password (safe to print)."""
    try:
        target = parse_sentinel_url(url)
    except RedisUrlError:
        return "redis+sentinel://(unreadable URL)"
    hosts = ",".join(f"{h}:{p}" for h, p in target.sentinels)
    scheme = SENTINEL_SCHEMES[1] if target.tls else SENTINEL_SCHEMES[0]
    return f"{scheme}://{hosts}/{target.master}/{target.db}"


def normalize_redis_url(url: str, password: str = "", sentinel_password: str = "") -> str:
    """The Redis URL with its user and password percent-encoded, `password` (if given) put in.

    The password ends at the last '@', so one written raw with '#', '/', '@' or ':' in it (which
    break a URL parser) reads the same as its percent-encoded form; an encoded one is unchanged.
    A Sentinel URL gets `password` as the data nodes' and `sentinel_password` as the Sentinels'.
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme in SENTINEL_SCHEMES:
        target = parse_sentinel_url(url)
        return sentinel_url(
            replace(
                target,
                password=password or target.password,
                sentinel_password=sentinel_password or target.sentinel_password,
            )
        )
    if not sep or scheme not in ("redis", "rediss"):
        return url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        userinfo, host = "", rest
    user, _, secret = userinfo.partition(":")
    secret = password or unquote(secret)
    if not user and not secret:
        return f"{scheme}://{host}"
    return f"{scheme}://{quote(unquote(user), safe='')}:{quote(secret, safe='')}@{host}"


# Redis Cluster: `ORDERFLOW_REDIS_CLUSTER=true` with seed nodes in ORDERFLOW_REDIS_URL,
# `redis://[USER:PASS@]h1:7000,h2:7001[/0]` (rediss:// for TLS), which the settings write as
# `redis+cluster://...` so that every component sees from the URL alone that it is a cluster.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CLUSTER_SETTING = "ORDERFLOW_REDIS_CLUSTER"
PREFIX_SETTING = "ORDERFLOW_QUEUE_PREFIX"


@dataclass(frozen=True)
class ClusterUrl:
    """The seed nodes of a Redis Cluster and how to reach its nodes."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    password: str | None = None
    username: str | None = None
    options: tuple[tuple[str, str], ...] = ()  # other query options (ssl_ca_certs ...)

    def option(self, name: str) -> str | None:
        """A query option by name, or None."""
        return dict(self.options).get(name)


def is_cluster_url(url: str) -> bool:
    """True for `redis+cluster://` and `rediss+cluster://` URLs."""
    return url.partition("://")[0] in CLUSTER_SCHEMES


def parse_cluster_url(url: str, setting: str = SETTING) -> ClusterUrl:
    """Split a cluster URL (or a `redis://h1:p1,h2:p2` seed list); RedisUrlError naming
    `setting`, never the URL, when it is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in (*CLUSTER_SCHEMES, "redis", "rediss"):
        raise RedisUrlError(f"{setting} is not a redis:// URL of seed nodes")
    rest, _, query = rest.partition("?")
    userinfo, at, hosts_path = rest.rpartition("@")
    if not at:
        userinfo, hosts_path = "", rest
    hosts, _, path = hosts_path.partition("/")
    if path.strip("/") not in ("", "0"):
        raise RedisUrlError(f"{setting}: a Redis Cluster has only database 0 ({CLUSTER_SETTING})")
    nodes = tuple(_node(h, setting) for h in hosts.split(",") if h.strip())
    if not nodes:
        raise RedisUrlError(f"{setting} lists no seed node of the cluster")
    user, _, secret = userinfo.partition(":")
    fields = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    return ClusterUrl(
        nodes=nodes,
        tls=scheme.startswith("rediss"),
        password=unquote(secret) or None,
        username=unquote(user) or None,
        options=tuple(sorted(fields.items())),
    )


def _node(entry: str, setting: str) -> tuple[str, int]:
    host, colon, port = entry.strip().rpartition(":")
    if not colon:
        return entry.strip(), 6379
    if not port.isdigit() or not host:
        raise RedisUrlError(f"{setting}: a seed node is not host:port")
    return host.strip("[]"), int(port)


def cluster_url(target: ClusterUrl) -> str:
    """The `redis+cluster://` URL of `target`, its user and password percent-encoded."""
    scheme = CLUSTER_SCHEMES[1] if target.tls else CLUSTER_SCHEMES[0]
    auth = ""
    if target.password or target.username:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    hosts = ",".join(f"{h}:{p}" for h, p in target.nodes)
    tail = f"?{urlencode(dict(target.options), quote_via=quote, safe='')}" if target.options else ""
    return f"{scheme}://{auth}{hosts}/0{tail}"


def redact_cluster_url(url: str) -> str:
    """A cluster URL without any password (safe to print)."""
    try:
        target = parse_cluster_url(url)
    except RedisUrlError:
        return "redis+cluster://(unreadable URL)"
    scheme = CLUSTER_SCHEMES[1] if target.tls else CLUSTER_SCHEMES[0]
    return f"{scheme}://" + ",".join(f"{h}:{p}" for h, p in target.nodes) + "/0"


def hash_tag(key: str) -> str | None:
    """The hash tag of a key as Redis Cluster reads it (what is between the first '{' and the
    next '}', if not empty), or None: then the whole key is hashed."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1 : end] if end > start + 1 else None


def check_cluster_prefix(prefix: str, setting: str = PREFIX_SETTING) -> None:
    """RedisUrlError unless `prefix` carries a hash tag (every key of a queue in one slot)."""
    if hash_tag(prefix) is None:
        raise RedisUrlError(
            f"{setting} must carry a hash tag on a Redis Cluster ({CLUSTER_SETTING}=true), e.g."
            " {bull}: every key of a queue must live in one slot (BullMQ's rule; give Node"
            " producers and bull-board the same prefix)"
        )


def normalize_cluster_url(url: str, password: str = "") -> str:
    """The seed list (`redis://h1:p1,h2:p2` or `redis+cluster://...`) as a `redis+cluster://`
    URL, `password` (if given) as the nodes' password."""
    if is_sentinel_url(url):
        raise RedisUrlError(f"{CLUSTER_SETTING}=true needs seed nodes in {SETTING}, not Sentinel")
    target = parse_cluster_url(url)
    return cluster_url(replace(target, password=password or target.password))


def redis_py_options(target: SentinelUrl | ClusterUrl) -> dict[str, Any]:
    """The data nodes' credentials and TLS as redis-py's keyword arguments (Sentinel, Cluster)."""
    options: dict[str, Any] = {}
    if target.password:
        options["password"] = target.password
    if target.username:
        options["username"] = target.username
    if target.tls:
        options["ssl"] = True
        if ca := target.option("ssl_ca_certs"):
            options["ssl_ca_certs"] = ca
        if (reqs := target.option("ssl_cert_reqs")) is not None:
            options["ssl_cert_reqs"] = reqs
    return options
