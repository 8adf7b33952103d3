"""Transactions: reads never queue behind another transaction's writes."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import col

from activities.erp import LocalErp
from activities.notify import NotificationActivities
from activities.order import OrderActivities
from orderflow.contracts.order import (
    NotificationKind,
    NotifyInput,
    OrderInput,
    OrderLine,
    OrderPolicy,
)
from orderflow.db import DB_CONNECT_TIMEOUT_SECONDS, Product, make_engine

# far below SQLite's busy timeout (30 s): a read that waited for the write lock fails here
READ_WITHIN_SECONDS = 5


class RecordingQueue:
    """The email queue's `add`, keeping what it was given."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []

    async def add(self, name: str, data: dict[str, Any], opts: dict[str, Any] | None = None) -> str:
        """Record the job."""
        self.jobs.append((name, data, opts))
        return str((opts or {}).get("jobId", name))


async def test_a_mail_is_built_while_another_order_holds_the_write_lock(
    engine: Engine, catalogue: Callable[..., dict[str, str]]
) -> None:
    """The confirmation mail reads its order while another order's transaction is writing.

    On SQLite every transaction used to begin with BEGIN IMMEDIATE, so this read waited for the
    writer (and, in the async notify activity, blocked the worker's event loop meanwhile).
    """
    sku = catalogue(mug=(49_900, 10))["mug"]
    order_id = f"read-{uuid.uuid4().hex[:8]}"
    OrderActivities(engine, LocalErp(engine)).place_order(
        OrderInput(order_id, "c-1", "c@example.com", [OrderLine(sku, 1)], OrderPolicy())
    )
    queue = RecordingQueue()
    notify = NotificationActivities(engine, queue)
    with engine.begin() as writer:  # another order's transaction, still open
        writer.execute(
            update(Product).where(col(Product.sku) == sku).values(on_hand=Product.on_hand - 1)
        )
        result = await asyncio.wait_for(
            notify.notify(NotifyInput(order_id=order_id, kind=NotificationKind.CONFIRMATION)),
            READ_WITHIN_SECONDS,
        )
    assert result.job_id == f"order-confirmation-{order_id}"
    (_, data, _), *_ = queue.jobs
    assert data["data"]["orderNumber"] == order_id
    assert data["data"]["totalMinor"] == 49_900


def test_a_database_that_accepts_but_never_answers_fails_the_connect_within_seconds() -> None:
    """A dropped or frozen PostgreSQL host must not hold a thread for the OS's ~2 min."""
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nothing ever answers
    port = silent.getsockname()[1]
    engine = make_engine(f"postgresql+psycopg://shop:secret@127.0.0.1:{port}/shop")
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError, match="timeout"):
            with engine.connect():
                pass
        assert time.monotonic() - started < DB_CONNECT_TIMEOUT_SECONDS + 10
    finally:
        engine.dispose()
        silent.close()
