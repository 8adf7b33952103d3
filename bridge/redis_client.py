"""A small pipelining Redis client (hiredis parser): every caller's command shares one connection.

Like ioredis in Node, commands from all tasks are written back to back and answered in order, so
a worker with many jobs in flight pays for round trips once, not once per job.

With a `redis+sentinel://` URL the address of the primary comes from Sentinel (redis-py's
discovery, bridge/sentinel.py) at each (re)connection; the new connection checks with ROLE that
it reached a primary, and a READONLY reply (the node was demoted) drops the connection, so the
next call asks Sentinel again. Commands are never queued while no connection is up: a caller
gets ConnectionError at once (producers fail fast) and its next call uses the new primary.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import hiredis

from bridge.sentinel import PrimaryLocator
from orderflow.redis_url import is_sentinel_url, parse_sentinel_url

Arg = str | bytes | int | float
CONNECT_SECONDS = 5.0  # opening a connection (TCP, TLS): an unreachable host fails, not hangs


class RedisReplyError(Exception):
    """Redis answered a command with an error."""


@dataclass(frozen=True)
class Script:
    """A Lua script, run by SHA1 and loaded on demand."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command in RESP."""
    return b"*%d\r\n" % len(args) + encode_args(args)


def encode_args(args: Sequence[Arg]) -> bytes:
    """Arguments as RESP bulk strings, without the command's header (see PreparedCall)."""
    out = []
    for arg in args:
        if type(arg) is str:
            b = arg.encode()
        elif isinstance(arg, bytes):
            b = arg
        elif isinstance(arg, str):
            b = arg.encode()
        elif isinstance(arg, bool):
            b = b"1" if arg else b"0"
        elif isinstance(arg, int):
            b = b"%d" % arg
        else:
            b = repr(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


_MULTI = encode_command(["MULTI"])
_EXEC = encode_command(["EXEC"])


@dataclass(frozen=True)
class PreparedCall:
    """A script call whose fixed leading keys are encoded once: a hot path pays only the rest."""

    script: Script
    head: bytes  # EVALSHA, the sha, the key count and the fixed keys, in RESP
    head_len: int  # how many arguments `head` holds

    @classmethod
    def of(cls, script: Script, n_keys: int, fixed_keys: Sequence[Arg]) -> PreparedCall:
        """`n_keys` keys in all, the first of them `fixed_keys`."""
        lead: list[Arg] = ["EVALSHA", script.sha, n_keys, *fixed_keys]
        return cls(script, encode_args(lead), len(lead))

    def encode(self, rest: Sequence[Arg]) -> bytes:
        """The whole command in RESP, with the rest of the keys and the args."""
        return b"*%d\r\n" % (self.head_len + len(rest)) + self.head + encode_args(rest)


class _Replies:
    """One waiter for the replies of many commands (a batch needs no future per command).

    Stands in the protocol's waiter queue once per command, as a future would; errors are
    collected as values, and a lost connection fills the rest with the ConnectionError.
    """

    __slots__ = ("expected", "future", "replies")

    def __init__(self, expected: int, future: asyncio.Future[list[Any]]) -> None:
        self.expected = expected
        self.future = future
        self.replies: list[Any] = []

    def done(self) -> bool:
        return self.future.done()

    def set_result(self, reply: Any) -> None:
        self.replies.append(reply)
        if len(self.replies) == self.expected:
            self.future.set_result(self.replies)

    set_exception = set_result


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(encoding="utf-8", replyError=RedisReplyError)
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.buffer: list[bytes] = []
        self.flush_scheduled = False
        self.lost: Exception | None = None
        self.drop_on_readonly = False  # behind Sentinel: a demoted node's connection is useless

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while (reply := self.reader.gets()) is not False:
            fut = waiters.popleft()
            if fut.done():
                continue
            if isinstance(reply, RedisReplyError):
                if self.drop_on_readonly and str(reply).startswith("READONLY"):
                    self._drop("the node became a replica (READONLY)")
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = ConnectionError(f"redis connection lost: {exc or 'closed'}")
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(self.lost)

    def _drop(self, why: str) -> None:
        """Take this connection out of use now (later replies still reach their callers)."""
        if self.lost is None:
            self.lost = ConnectionError(f"redis connection dropped: {why}")
            if self.transport is not None:
                self.transport.close()

    def send(self, payload: bytes, futures: Sequence[asyncio.Future[Any]]) -> None:
        if self.lost is not None or self.transport is None:
            raise ConnectionError("redis connection is closed")
        self.waiters.extend(futures)
        self.buffer.append(payload)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.buffer and self.transport is not None and self.lost is None:
            data = b"".join(self.buffer)
            self.buffer.clear()
            self.transport.write(data)


def _fatal_setup_error(command: Sequence[Arg], reply: Any) -> bool:
    """A failed AUTH or SELECT, or any LOADING reply; a refused CLIENT SETNAME (ACL) is not."""
    if not isinstance(reply, BaseException):
        return False
    return command[0] in ("AUTH", "SELECT") or str(reply).startswith("LOADING")


def _not_primary(command: Sequence[Arg], reply: Any) -> bool:
    """ROLE answered by a replica (or a Sentinel) rather than a primary."""
    return command[0] == "ROLE" and isinstance(reply, list) and reply[:1] != ["master"]


def tls_context(scheme: str, query: dict[str, list[str]]) -> ssl.SSLContext | None:
    """TLS for rediss:// URLs, with redis-py's query options (ssl_ca_certs, ssl_cert_reqs ...)."""
    if scheme != "rediss":
        return None
    first = {k: v[0] for k, v in query.items() if v}
    context = ssl.create_default_context(cafile=first.get("ssl_ca_certs"))
    if first.get("ssl_certfile"):
        context.load_cert_chain(first["ssl_certfile"], first.get("ssl_keyfile"))
    if first.get("ssl_cert_reqs", "required").lower() in ("none", "cert_none"):
        context.check_hostname = False  # asked for explicitly: no verification at all
        context.verify_mode = ssl.CERT_NONE
    return context


class RedisClient:
    """One pipelined connection to Redis, reconnecting on the next call after a loss."""

    def __init__(self, url: str, name: str = "") -> None:
        self.locator: PrimaryLocator | None = None
        if is_sentinel_url(url):
            target = parse_sentinel_url(url)
            self.locator = PrimaryLocator(target)
            self.host, self.port = "", 0  # the primary's, once Sentinel has named it
            self.password, self.username, self.db = target.password, target.username, target.db
            options = {k: [v] for k, v in target.options}
            self.tls = tls_context("rediss" if target.tls else "redis", options)
        else:
            parsed = urlparse(url)
            self.host = parsed.hostname or "localhost"
            self.port = parsed.port or 6379
            self.password = unquote(parsed.password) if parsed.password else None
            self.username = unquote(parsed.username) if parsed.username else None
            self.db = int(parsed.path.strip("/") or 0)
            self.tls = tls_context(parsed.scheme, parse_qs(parsed.query))
        self.name = name
        self._proto: _Protocol | None = None
        self._lock = asyncio.Lock()
        self._scripts: dict[str, Script] = {}
        self.closed = False

    async def _ensure(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None:
            return proto
        async with self._lock:
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            if self.closed:
                raise ConnectionError("redis client is closed")
            if self.locator is not None:
                self.locator.watch(self._switched)
                self.host, self.port = await self.locator.primary()
            new = await self._connect(self.host, self.port)
            new.drop_on_readonly = self.locator is not None
            self._proto = new
            return new

    async def _connect(
        self, host: str, port: int, factory: type[_Protocol] = _Protocol
    ) -> _Protocol:
        """A new connection to host:port, authenticated and with the scripts loaded."""
        loop = asyncio.get_running_loop()
        _, new = await asyncio.wait_for(
            loop.create_connection(
                factory, host, port, ssl=self.tls, server_hostname=host if self.tls else None
            ),
            CONNECT_SECONDS,
        )
        await self._setup(new)
        return new

    def _switched(self) -> None:
        """Sentinel named a new primary: leave the old one now, the next call finds the new."""
        if self._proto is not None:
            self._proto._drop("Sentinel switched the primary")

    async def _setup(self, proto: _Protocol) -> None:
        """Authenticate, select, name the connection, load the scripts; behind Sentinel, check
        that the node is the primary (Sentinel may not have seen the switch yet)."""
        setup: list[list[Arg]] = []
        if self.password:
            auth: list[Arg] = ["AUTH", self.password]
            setup.append(auth if not self.username else ["AUTH", self.username, self.password])
        if self.db:
            setup.append(["SELECT", self.db])
        if self.name:
            setup.append(["CLIENT", "SETNAME", self.name])
        if self.locator is not None:
            setup.append(["ROLE"])
        setup += [["SCRIPT", "LOAD", s.source] for s in self._scripts.values()]
        if setup:
            replies = await self._send(proto, setup)
            for command, reply in zip(setup, replies, strict=True):
                if _fatal_setup_error(command, reply) or _not_primary(command, reply):
                    # a wrong password, or a Redis still loading: this connection is not ready
                    if proto.transport is not None:
                        proto.transport.close()
                    if isinstance(reply, BaseException):
                        raise reply
                    raise ConnectionError(
                        f"redis at {self.host}:{self.port} is a {reply[0]}, not the primary"
                        " yet (Sentinel has not seen the switch)"
                    )

    @staticmethod
    async def _send(proto: _Protocol, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        return await RedisClient._send_batch(proto, [encode_command(c) for c in commands])

    async def send_encoded(self, payloads: Sequence[bytes]) -> list[Any]:
        """Run commands encoded already (encode_command, PreparedCall.encode) in one write;
        error replies come back as RedisReplyError values."""
        return await self._send_batch(await self._ensure(), payloads)

    @staticmethod
    async def _send_batch(proto: _Protocol, payloads: Sequence[bytes]) -> list[Any]:
        if not payloads:
            return []
        replies = _Replies(len(payloads), asyncio.get_running_loop().create_future())
        proto.send(b"".join(payloads), [replies] * len(payloads))  # type: ignore[list-item]
        return await replies.future

    async def execute(self, *args: Arg) -> Any:
        """Run one command and return its reply (raises RedisReplyError on an error reply)."""
        proto = await self._ensure()
        fut = asyncio.get_running_loop().create_future()
        proto.send(encode_command(args), (fut,))
        return await fut

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Run many commands in one write; error replies come back as RedisReplyError values."""
        if not commands:
            return []
        return await self._send(await self._ensure(), commands)

    async def transaction(self, commands: Sequence[Sequence[Arg] | bytes]) -> list[Any]:
        """Run commands (argument lists, or encoded already) atomically; EXEC's replies."""
        encoded = [c if isinstance(c, bytes) else encode_command(c) for c in commands]
        replies = await self.send_encoded([_MULTI, *encoded, _EXEC])
        for reply in replies:
            if isinstance(reply, BaseException) and not isinstance(reply, RedisReplyError):
                raise reply
        if isinstance(replies[-1], BaseException):
            raise replies[-1]
        return list(replies[-1])

    def register(self, script: Script) -> Script:
        """Remember a script so that it is (re)loaded on every new connection."""
        self._scripts[script.sha] = script
        return script

    def evalsha_args(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
        """The EVALSHA command for a script, for pipelines and transactions."""
        return ["EVALSHA", script.sha, len(keys), *keys, *args]

    async def run(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run a script by SHA, loading it first if Redis does not know it (after a restart)."""
        self._scripts.setdefault(script.sha, script)
        try:
            return await self.execute(*self.evalsha_args(script, keys, args))
        except RedisReplyError as err:
            if not str(err).startswith("NOSCRIPT"):
                raise
        await self.execute("SCRIPT", "LOAD", script.source)
        return await self.execute(*self.evalsha_args(script, keys, args))

    async def call(self, prepared: PreparedCall, rest: Sequence[Arg]) -> Any:
        """Run a prepared script call with the rest of its keys and its args (as `run`)."""
        self._scripts.setdefault(prepared.script.sha, prepared.script)
        payload = prepared.encode(rest)
        try:
            return await self._send_one(payload)
        except RedisReplyError as err:
            if not str(err).startswith("NOSCRIPT"):
                raise
        await self.execute("SCRIPT", "LOAD", prepared.script.source)
        return await self._send_one(payload)

    async def _send_one(self, payload: bytes) -> Any:
        proto = await self._ensure()
        fut = asyncio.get_running_loop().create_future()
        proto.send(payload, (fut,))
        return await fut

    async def load_scripts(self) -> None:
        """Load every registered script now (before they are used inside MULTI)."""
        await self.pipeline([["SCRIPT", "LOAD", s.source] for s in self._scripts.values()])

    async def close(self) -> None:
        """Close the connection; pending calls fail with ConnectionError."""
        self.closed = True
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
        if self.locator is not None:
            await self.locator.close()
