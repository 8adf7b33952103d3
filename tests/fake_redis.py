"""A Redis stand-in in front of a real redis-server that can answer every command with an error.

Mode "pass" forwards each command and its reply; any other mode is an error reply sent back
at once (e.g. "LOADING Redis is loading the dataset in memory"), as a restarting or demoted
Redis answers. Replies keep the order of the commands, as Redis guarantees.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import hiredis

LOADING = "LOADING Redis is loading the dataset in memory"
READONLY = "READONLY You can't write against a read only replica."
NOAUTH = "NOAUTH Authentication required."
BUSY = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT."


class _Error(Exception):
    pass


def encode(reply: Any) -> bytes:
    """One reply in RESP2."""
    if isinstance(reply, _Error):
        return b"-%s\r\n" % str(reply).encode()
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if isinstance(reply, list):
        return b"*%d\r\n" % len(reply) + b"".join(encode(r) for r in reply)
    raise TypeError(f"cannot encode {reply!r}")


class FakeRedis:
    """The proxy; `mode` may be changed at any time, `errors` counts error replies by mode."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.refused: dict[str, str] = {}  # command name -> error reply, whatever the mode
        self.errors: collections.Counter[str] = collections.Counter()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> FakeRedis:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def close(self) -> None:
        for writer in list(self._conns):
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        requests = hiredis.Reader()
        replies = hiredis.Reader(replyError=_Error)
        pending: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue()
        upstream_waiting: collections.deque[asyncio.Future[Any]] = collections.deque()

        async def read_upstream() -> None:
            while data := await up_reader.read(65536):
                replies.feed(data)
                while (reply := replies.gets()) is not False:
                    upstream_waiting.popleft().set_result(reply)

        async def write_replies() -> None:
            while (fut := await pending.get()) is not None:
                writer.write(encode(await fut))

        tasks = [asyncio.create_task(read_upstream()), asyncio.create_task(write_replies())]
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(65536):
                requests.feed(data)
                while (command := requests.gets()) is not False:
                    fut = loop.create_future()
                    refusal = self.refused.get(bytes(command[0]).decode().upper())
                    if refusal:
                        self.errors[refusal.split(" ", 1)[0]] += 1
                        fut.set_result(_Error(refusal))
                    elif self.mode == "pass":
                        upstream_waiting.append(fut)
                        up_writer.write(encode(list(command)))
                    else:
                        self.errors[self.mode.split(" ", 1)[0]] += 1
                        fut.set_result(_Error(self.mode))
                    pending.put_nowait(fut)
        except ConnectionError:
            pass
        finally:
            pending.put_nowait(None)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up_writer.close()
            writer.close()
            self._conns.discard(writer)
