"""A Redis Cluster of three primaries, real redis-server processes on free ports, and a way to
move one slot (with its keys) from its owner to another primary while clients use it."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from app import embedded
from tests.helpers import wait_until

MIGRATE_BATCH = 10  # keys per MIGRATE, as `redis-cli --cluster reshard` does (--cluster-pipeline)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ClusterTopology:
    """Three primaries, no replicas, all 16384 slots covered (`redis-cli --cluster create`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports: list[int] = []
        while len(self.ports) < 3:  # the cluster bus listens on port + 10000 (so ≤ 55535)
            port = embedded.free_port()
            if port <= 55535 and _free(port + 10000) and port not in self.ports:
                self.ports.append(port)
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """The seed list as the settings take it (ORDERFLOW_REDIS_CLUSTER=true)."""
        return "redis://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2]) + "/0"

    @property
    def cluster_url(self) -> str:
        """The same, as the settings write it."""
        return self.url.replace("redis://", "redis+cluster://", 1)

    def start(self) -> ClusterTopology:
        for port in self.ports:
            data = self.folder / str(port)
            args = [*embedded.redis_server_args(port=port, data_dir=data),
                    "--cluster-enabled", "yes", "--cluster-config-file", str(data / "nodes.conf"),
                    "--cluster-node-timeout", "2000"]  # fmt: skip
            with (self.folder / f"{port}.log").open("ab") as out:
                proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
            embedded.wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
            self.procs[port] = proc
        hosts = [f"127.0.0.1:{p}" for p in self.ports]
        create = [str(Path(embedded.redis_binary()).with_name("redis-cli")), "--cluster", "create",
                  *hosts, "--cluster-yes"]  # fmt: skip
        out = subprocess.run(create, capture_output=True, text=True, timeout=60, check=True)
        assert "All 16384 slots covered" in out.stdout, out.stdout
        self.wait_until(self._settled, "every node to agree on the slot map")
        return self

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=5)

    def _settled(self) -> bool:
        for port in self.ports:
            with self.node(port) as r:
                if r.cluster("info").get("cluster_state") != "ok":
                    return False
        return True

    def node_id(self, port: int) -> str:
        with self.node(port) as r:
            return str(r.execute_command("CLUSTER", "MYID"))

    def owner(self, key: str) -> int:
        """The port of the primary that owns the slot of `key`."""
        slot = key_slot(key.encode())
        with self.node(self.ports[0]) as r:
            for start, end, primary, *_ in r.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(primary[1])
        raise AssertionError(f"slot {slot} not covered")

    def move_slot(
        self, key: str, to: int | None = None, batch: int = MIGRATE_BATCH, pause: float = 0.0
    ) -> tuple[int, int, int]:
        """Migrate the slot of `key` and its keys to another primary, as `redis-cli --cluster
        reshard` does (SETSLOT IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE).
        `pause` seconds between batches keep the slot half-migrated longer (ASK, TRYAGAIN).
        (source port, target port, keys moved)."""
        slot = key_slot(key.encode())
        source = self.owner(key)
        target = to or next(p for p in self.ports if p != source)
        source_id, target_id = self.node_id(source), self.node_id(target)
        moved = 0
        with self.node(source) as src, self.node(target) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
                src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
                time.sleep(pause)
            for port in (target, source, *[p for p in self.ports if p not in (source, target)]):
                with self.node(port) as r:
                    r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_until(lambda: self.owner(key) == target, "the new owner to be known")
        return source, target, moved

    def wait_until(self, check, what: str, within: float = 30) -> None:  # type: ignore[no-untyped-def]
        wait_until(check, what, within, ignoring=(redis.RedisError,))

    def stop(self) -> None:
        for proc in self.procs.values():
            embedded.stop(proc)
