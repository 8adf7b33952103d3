"""What tests/test_codec.py runs on: its own servers, `orderflow run` processes with given codec
keys, clients with given keys (or none), and a walk over every payload of a raw history.

The processes get a Temporal dev server, a redis-server, a SQLite database and an SMTP sink of
their own, so their workers never take the in-process test workers' tasks, and the keys they
hold are exactly the ones a test gives them (never the suite's ORDERFLOW_CODEC_KEY).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory

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


@dataclass(frozen=True)
class Found:
    """A payload of a raw history, where it sits (proto field names from the event down)."""

    path: str
    payload: Payload

    @property
    def key_id(self) -> str:
        """The key id it names ('' for a payload in clear)."""
        return self.payload.metadata.get(codec.KEY_ID_METADATA, b"").decode()

    @property
    def encrypted(self) -> bool:
        """Sealed by the codec, with a key id."""
        return self.payload.metadata.get("encoding") == codec.ENCODING and bool(self.key_id)


def _children(message: Message) -> Iterator[tuple[str, Any]]:
    """(field name, value) of every set field, maps and lists flattened."""
    for field, value in message.ListFields():
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            for key, item in value.items():
                yield f"{field.name}[{key}]", key
                yield f"{field.name}[{key}]", item
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield f"{field.name}[{index}]", item
        else:
            yield field.name, value


def walk(message: Message, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every Payload (not descended into) and every str or bytes value, with its path."""
    if isinstance(message, Payload):
        yield path, message
        return
    for name, value in _children(message):
        here = f"{path}.{name}" if path else name
        if isinstance(value, Message):
            yield from walk(value, here)
        elif isinstance(value, str | bytes):
            yield here, value


def payloads(history: WorkflowHistory) -> list[Found]:
    """Every payload of every event, search attributes included."""
    return [
        Found(f"event {event.event_id}.{path}", value)
        for event in history.events
        for path, value in walk(event)
        if isinstance(value, Payload)
    ]


# what stays in clear by design: the search attributes (CustomerId a keyed hash), and the SDK
# core's own marker bookkeeping, written after the codec: a patch's id, a local activity's
# type, attempt and times (its result is a payload of the codec's, sealed)
CLEAR_SEARCH_ATTRIBUTES = {"OrderStatus", "OrderTotal", "CustomerId", "TemporalChangeVersion"}
CLEAR_MARKER_FIELDS = {
    "patch-data": {"id", "deprecated"},
    "data": {"seq", "attempt", "activity_id", "activity_type", "complete_time", "backoff",
             "original_schedule_time", "activation_index"},
}  # fmt: skip


def _clear_by_design(found: Found) -> bool:
    for name in CLEAR_SEARCH_ATTRIBUTES:
        if f".search_attributes.indexed_fields[{name}]" in found.path:
            value = json.loads(found.payload.data)
            return name != "CustomerId" or str(value).startswith("c_")
    for detail, fields in CLEAR_MARKER_FIELDS.items():
        if f".marker_recorded_event_attributes.details[{detail}]." in found.path:
            value = json.loads(found.payload.data)
            return isinstance(value, dict) and set(value) <= fields
    return False


def cleartext_payloads(history: WorkflowHistory) -> list[str]:
    """Where a payload is in clear that the codec should have sealed (see CLEAR_*)."""
    return [
        f"{f.path}: {f.payload.data[:200]!r}"
        for f in payloads(history)
        if not f.encrypted and not _clear_by_design(f)
    ]


def leaks(history: WorkflowHistory, needles: Sequence[str]) -> list[str]:
    """Where any needle occurs in clear in a raw history: a string, bytes, a payload's data or
    metadata, or one of them base64-encoded (as JSON output shows bytes)."""
    forms = {needle: (needle.encode(), base64.b64encode(needle.encode())) for needle in needles}
    found = []
    for event in history.events:
        for path, value in walk(event):
            blobs = (
                [value.data, *value.metadata.values(), *value.metadata.keys()]
                if isinstance(value, Payload)
                else [value]
            )
            for blob in blobs:
                data = blob.encode() if isinstance(blob, str) else blob
                for needle, encoded in forms.items():
                    if any(form in data for form in encoded):
                        found.append(f"{needle!r} at event {event.event_id}.{path}")
    return found


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
