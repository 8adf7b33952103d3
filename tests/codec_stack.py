"""What tests/test_codec.py runs on: its own servers, `orderflow run` processes with given codec
keys, clients with given keys (or none), the CLI's view of a history.

The processes get a Temporal dev server, a redis-server, a SQLite database and an SMTP sink of
their own, so their workers never take the in-process test workers' tasks, and the keys they
hold are exactly the ones a test gives them (never the suite's ORDERFLOW_CODEC_KEY).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from app import embedded
from app.smtp_sink import SmtpSink
from orderflow import codec
from orderflow.codec import CodecKey, Keyring
from orderflow.db import Product, make_engine
from orderflow.schema import upgrade
from orderflow.settings import Settings
from tests.temporal_env import TEMPORAL_BIN
from tests.test_distributed import Process, Stack

ORDERFLOW = str(Path(sys.executable).parent / "orderflow")


@dataclass
class CodecStack(Stack):
    """The servers, the SQLite database the processes share with the test, its engine."""

    engine: Engine | None = None

    @property
    def address(self) -> str:
        """The dev server's frontend."""
        return self.env["ORDERFLOW_TEMPORAL_ADDRESS"]

    def product(self, sku: str, price: int, stock: int = 10) -> str:
        """Add one product to the catalogue the workers read."""
        assert self.engine is not None
        with Session(self.engine) as session:
            session.add(Product(sku=sku, name=sku, price=price, on_hand=stock))
            session.commit()
        return sku


@pytest.fixture(scope="module")
def codec_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CodecStack]:
    """Temporal dev server (in memory), redis-server, a migrated SQLite file, an SMTP sink."""
    folder = tmp_path_factory.mktemp("codec")
    port = embedded.free_port()
    temporal = embedded.start_temporal(
        port=port, ui_port=None, db_file=None, log=folder / "temporal.log"
    )
    redis_url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    redis = embedded.start_redis(url=redis_url, data_dir=folder / "redis", log=folder / "redis.log")
    sink = SmtpSink(folder / "mail", "127.0.0.1", embedded.free_port()).start()
    database_url = f"sqlite:///{folder / 'orderflow.db'}"
    engine = make_engine(database_url)
    upgrade(engine)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORDERFLOW_", "OTEL_"))},
        "ORDERFLOW_DATA_DIR": str(folder / "data"),
        "ORDERFLOW_DATABASE_URL": database_url,
        "ORDERFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "ORDERFLOW_REDIS_URL": redis_url,
        "ORDERFLOW_SMTP_HOST": sink.host,
        "ORDERFLOW_SMTP_PORT": str(sink.port),
        "ORDERFLOW_EMBEDDED_TEMPORAL": "false",
        "ORDERFLOW_EMBEDDED_REDIS": "false",
        "ORDERFLOW_EMBEDDED_SMTP": "false",
        "ORDERFLOW_SEED_CATALOGUE": "false",
        "ORDERFLOW_MIGRATE_ON_START": "false",
        "ORDERFLOW_GRACEFUL_SHUTDOWN_SECONDS": "5",
        "ORDERFLOW_BRIDGE_GRACE_SECONDS": "5",
        "ORDERFLOW_ALLOW_INSECURE_SECRETS": "true",  # a throwaway topology on loopback
        "ORDERFLOW_ALLOW_SIMULATED_GATEWAY": "true",  # ... that moves no money
    }
    settings = Settings(
        redis_url=redis_url,
        database_url=database_url,
        temporal_address=env["ORDERFLOW_TEMPORAL_ADDRESS"],
    )
    yield CodecStack(folder, env, settings, sink, database_url, engine=engine)
    engine.dispose()
    sink.stop()
    embedded.stop(redis)
    embedded.stop(temporal)


async def spawn_workers(
    stack: CodecStack, name: str, current: CodecKey, old: Sequence[CodecKey] = ()
) -> Process:
    """`orderflow run --part workflows --part bridge` holding exactly these codec keys."""
    port = embedded.free_port()
    log = stack.folder / f"{name}.log"
    keys = {
        "ORDERFLOW_CODEC_KEY": current.spec(),
        "ORDERFLOW_CODEC_OLD_KEYS": ",".join(key.spec() for key in old),
    }
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            ORDERFLOW, "run", "--part", "workflows", "--part", "bridge",
            env={**stack.env, "ORDERFLOW_METRICS_PORT": str(port),
                 "ORDERFLOW_SERVICE_NAME": name, **keys},
            stdout=out, stderr=out,
        )  # fmt: skip
    process = Process(name, proc, log, port)
    stack.procs.append(process)
    return process


async def client_with(stack: CodecStack, *keys: CodecKey) -> Client:
    """A client of the stack's server holding these keys (the first encrypts); none: no codec."""
    if not keys:
        return await Client.connect(stack.address)
    ring = Keyring(keys[0], keys[1:])
    return await Client.connect(stack.address, data_converter=codec.data_converter(ring))


async def cli_history(stack: CodecStack, workflow_id: str) -> str:
    """`temporal workflow show --output json`: the history as an operator's CLI shows it."""
    proc = await asyncio.create_subprocess_exec(
        TEMPORAL_BIN, "workflow", "show", "--address", stack.address,
        "--workflow-id", workflow_id, "--output", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode(errors="replace")
    json.loads(out)  # it is JSON
    return out.decode()
