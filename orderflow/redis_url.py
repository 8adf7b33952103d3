"""Redis URLs: one server (`redis://`, `rediss://`) or a primary found through Sentinel.

Sentinel: `redis+sentinel://[:SENTINELPASS@]host:26379,host2:26379/MASTERNAME/DB` (TLS to the
data nodes: `rediss+sentinel://`). The userinfo is the Sentinels' password; the data nodes'
password (and ACL user) ride in the query, `?password=...&username=...`, percent-encoded, so
the two stay apart; `normalize_redis_url` writes them from the settings. Parse errors name the
setting and never echo the URL (it holds passwords).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
