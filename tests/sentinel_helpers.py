"""A Redis primary, its replica and one Sentinel, all real redis-server processes on free ports."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from app import embedded
from tests.helpers import wait_until

MASTER = "mymaster"
DOWN_AFTER_MS = 1000  # the Sentinel calls a silent primary down after this long (kill -9 test)


class SentinelTopology:
    """`primary` replicated by `replica`, watched by one Sentinel (quorum 1)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = [embedded.free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def sentinel_port(self) -> int:
        return self.ports[2]

    @property
    def url(self) -> str:
        """The redis+sentinel:// URL of the topology."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{MASTER}/0"

    def _spawn(self, port: int, args: list[str]) -> None:
        with (self.folder / f"{port}.log").open("ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        embedded.wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
        self.procs[port] = proc

    def start(self) -> SentinelTopology:
        first, second, sentinel = self.ports
        for port in (first, second):
            args = [*embedded.redis_server_args(port=port, data_dir=self.folder / str(port)),
                    "--repl-diskless-sync-delay", "0"]  # fmt: skip
            self._spawn(port, args if port == first else [*args, "--replicaof", "127.0.0.1", str(first)])  # fmt: skip
        conf = self.folder / "sentinel.conf"
        conf.write_text(
            f"port {sentinel}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {first} 1\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
        )
        self._spawn(sentinel, [embedded.redis_binary(), str(conf), "--sentinel"])
        self.wait_until(lambda: self.in_sync(second), "the replica's first sync")
        self.wait_until(lambda: self.replicas_known() >= 1, "the Sentinel to see the replica")
        return self

    def sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_port, decode_responses=True, socket_timeout=2)

    def primary_port(self) -> int:
        with self.sentinel() as s:
            return int(s.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)[1])

    def in_sync(self, port: int) -> bool:
        with redis.Redis(port=port, decode_responses=True, socket_timeout=2) as r:
            return str(r.info("replication").get("master_link_status")) == "up"

    def replicas_known(self) -> int:
        with self.sentinel() as s:
            replicas = s.execute_command("SENTINEL", "replicas", MASTER)
        return sum(1 for r in replicas if "s_down" not in str(r) and "disconnected" not in str(r))

    def failover(self) -> int:
        """SENTINEL FAILOVER (retried while the Sentinel finds no good replica yet); the old port."""
        old = self.primary_port()
        deadline = time.monotonic() + 20
        while True:
            try:
                with self.sentinel() as s:
                    s.execute_command("SENTINEL", "failover", MASTER)
                return old
            except redis.ResponseError:  # NOGOODSLAVE until it has fresh INFO of the replica
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def kill_primary(self) -> int:
        """SIGKILL the primary (nothing written after); its port."""
        port = self.primary_port()
        self.procs[port].kill()
        self.procs[port].wait(10)
        return port

    def wait_until(self, check, what: str, within: float = 30) -> None:  # type: ignore[no-untyped-def]
        wait_until(check, what, within, ignoring=())

    def stop(self) -> None:
        for proc in self.procs.values():
            embedded.stop(proc)
