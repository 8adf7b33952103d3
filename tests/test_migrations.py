"""The schema belongs to the migrations: `orderflow db upgrade` makes it, serving processes wait."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import BigInteger, text
from sqlmodel import Session, SQLModel
from temporalio.testing import WorkflowEnvironment

from app import embedded
from app.runner import prepare_schema
from orderflow.db import Product, make_engine
from orderflow.schema import BASELINE, current_revisions, head_revisions, upgrade, write_revision
from orderflow.settings import Settings
from tests.helpers import eventually
from tests.postgres import PostgresCluster

ORDERFLOW = str(Path(sys.executable).parent / "orderflow")


def test_migrations_make_exactly_the_models_tables_on_postgresql(postgres: PostgresCluster) -> None:
    engine = make_engine(postgres.create_database())
    assert upgrade(engine) == head_revisions()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


def test_migrations_make_exactly_the_models_tables_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert upgrade(engine) == head_revisions()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


def test_a_new_revision_of_unchanged_models_changes_nothing(tmp_path: Path) -> None:
    written = write_revision("nothing changed", directory=tmp_path)
    text = written.read_text()
    following = int(sorted(head_revisions())[0]) + 1
    assert written.parent == tmp_path and written.name.startswith(f"{following:04d}_")
    assert f"down_revision: str | None = {sorted(head_revisions())[0]!r}" in text
    assert "op." not in text, text  # no operation: the migrations already make the models


def test_a_database_made_by_create_all_is_adopted_not_recreated(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, BASELINE)  # the tables create_all made before migrations (floats in rupees)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO product (sku, name, price, on_hand, reserved)"
                          " VALUES ('KEPT', 'kept', 799.5, 3, 0)"))  # fmt: skip
    assert current_revisions(engine) == set()
    assert upgrade(engine) == head_revisions()
    with Session(engine) as session:
        kept = session.get(Product, "KEPT")
    assert kept is not None and kept.on_hand == 3
    assert kept.price == 79_950  # the money migration: rupees became paise, an integer


def test_ten_starts_at_the_same_instant_on_an_empty_postgresql_all_get_the_schema(
    postgres: PostgresCluster,
) -> None:
    """The start step of ten processes, released together by a barrier: five migrate on start
    (the embedded default), five wait for the schema (the distributed engine). With create_all
    at start, 7 to 9 of 10 such starts failed here on a duplicate key in pg_type."""
    url = postgres.create_database()
    engines = [make_engine(url) for _ in range(10)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def start(i: int) -> None:
        settings = Settings(migrate_on_start=i % 2 == 0, schema_wait_seconds=60)
        barrier.wait()
        try:
            prepare_schema(settings, engines[i])
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for engine in engines:
        engine.dispose()
    assert errors == []
    assert current_revisions(make_engine(url)) == head_revisions()


async def test_ten_processes_starting_at_once_on_empty_postgresql_none_crashes(
    postgres: PostgresCluster, env: WorkflowEnvironment, redis_url: str, tmp_path: Path
) -> None:
    """One migration job and nine HTTP processes, all started together on an empty database.

    Four wait for the job (the distributed engine); five also try to migrate on start (the
    embedded default), and the advisory lock makes all but one find nothing to do.
    """
    url = postgres.create_database()
    base = {
        **os.environ,
        "ORDERFLOW_DATABASE_URL": url,
        "ORDERFLOW_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "ORDERFLOW_REDIS_URL": redis_url,
        "ORDERFLOW_EMBEDDED_TEMPORAL": "false",
        "ORDERFLOW_EMBEDDED_REDIS": "false",
        "ORDERFLOW_EMBEDDED_SMTP": "false",
        "ORDERFLOW_SEED_CATALOGUE": "false",
        "ORDERFLOW_DATA_DIR": str(tmp_path),
        "ORDERFLOW_ALLOW_INSECURE_SECRETS": "true",  # a throwaway topology on loopback
        "ORDERFLOW_ALLOW_SIMULATED_GATEWAY": "true",  # ... that moves no money
    }
    base.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    ports = [embedded.free_port() for _ in range(9)]
    logs = [(tmp_path / f"proc{i}.log").open("wb") for i in range(10)]
    job = await asyncio.create_subprocess_exec(
        ORDERFLOW, "db", "upgrade", env=base, stdout=logs[0], stderr=logs[0]
    )
    servers = [
        await asyncio.create_subprocess_exec(
            ORDERFLOW,
            "run",
            "--part",
            "http",
            env={
                **base,
                "ORDERFLOW_HTTP_PORT": str(port),
                "ORDERFLOW_MIGRATE_ON_START": "true" if i % 2 else "false",
            },
            stdout=logs[i + 1],
            stderr=logs[i + 1],
        )
        for i, port in enumerate(ports)
    ]

    def log_of(i: int) -> str:
        return (tmp_path / f"proc{i}.log").read_text(errors="replace")[-2000:]

    try:
        assert await asyncio.wait_for(job.wait(), 120) == 0, log_of(0)
        async with httpx.AsyncClient() as http:

            async def all_healthy() -> bool:
                for i, (port, proc) in enumerate(zip(ports, servers, strict=True)):
                    assert proc.returncode is None, f"process {i + 1} died:\n{log_of(i + 1)}"
                    try:
                        if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code != 200:
                            return False
                    except httpx.TransportError:
                        return False
                return True

            await eventually(all_healthy, within=180, what="nine HTTP processes healthy")
        assert current_revisions(make_engine(url)) == head_revisions()
    finally:
        for proc in servers:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(proc.wait(), 60) for proc in servers]
        for log in logs:
            log.close()
    assert codes == [0] * 9, [log_of(i + 1) for i, c in enumerate(codes) if c]


# every amount the schema keeps, in minor units: (table, column)
MONEY_COLUMNS = {
    ("product", "price"),
    ("order", "total"),
    ("orderitem", "unit_price"),
    ("invoice", "total"),
    ("payment", "amount"),
    ("webhookevent", "amount"),
}


def test_every_money_column_is_listed_and_64_bit_in_the_models() -> None:
    """A new amount column joins MONEY_COLUMNS (and the migration that widens it)."""
    named = {
        (table.name, column.name)
        for table in SQLModel.metadata.tables.values()
        for column in table.columns
        if column.name in {"price", "total", "unit_price", "amount"}
    }
    assert named == MONEY_COLUMNS
    narrow = {
        (table, column)
        for table, column in MONEY_COLUMNS
        if not isinstance(SQLModel.metadata.tables[table].columns[column].type, BigInteger)
    }
    assert narrow == set(), f"32-bit money columns in the models: {sorted(narrow)}"


def test_the_money_migration_widens_every_amount_to_bigint_and_keeps_them_on_postgresql(
    postgres: PostgresCluster,
) -> None:
    """A database made before 0004: its amounts survive, and then hold more than 2^31."""
    engine = make_engine(postgres.create_database())
    upgrade(engine, "0003")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO product (sku, name, price, on_hand, reserved)"
                          " VALUES ('OLD', 'old', 2147483647, 1, 0)"))  # fmt: skip
        conn.execute(text("INSERT INTO webhookevent (provider, event_id, type, order_id,"
                          " payment_id, amount, currency, status, detail, received_at)"
                          " VALUES ('stripe', 'evt_old', 't', 'o', 'p', 12345, 'INR',"
                          " 'APPLIED', '', now())"))  # fmt: skip
    assert upgrade(engine) == head_revisions()
    with engine.begin() as conn:
        types = {
            (table, column): conn.execute(
                text(
                    "SELECT data_type FROM information_schema.columns"
                    " WHERE table_name = :table AND column_name = :column"
                ),
                {"table": table, "column": column},
            ).scalar_one()
            for table, column in MONEY_COLUMNS
        }
        assert set(types.values()) == {"bigint"}, types
        kept = conn.execute(text("SELECT price FROM product WHERE sku = 'OLD'")).scalar_one()
        event = conn.execute(text("SELECT amount FROM webhookevent")).scalar_one()
        assert (kept, event) == (2_147_483_647, 12_345)
        conn.execute(text("UPDATE product SET price = 9223372036854775807 WHERE sku = 'OLD'"))
        wide = conn.execute(text("SELECT price FROM product WHERE sku = 'OLD'")).scalar_one()
    engine.dispose()
    assert wide == 2**63 - 1


async def test_a_start_cancelled_while_waiting_for_the_schema_leaves_no_thread_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run()` cancelled while it waits for the migration job: no thread goes on polling a
    database whose engine the cancelled start has already disposed."""
    import app.runner as runner
    from orderflow import schema

    polling = threading.Event()
    returned = threading.Event()
    waits = schema.wait_for_schema

    def wait_for_schema(*args: object, **kwargs: object) -> None:
        polling.set()
        try:
            waits(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            returned.set()

    monkeypatch.setattr(schema, "wait_for_schema", wait_for_schema)
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'empty.db'}",
        migrate_on_start=False,  # the distributed engine: wait for `orderflow db upgrade`
        schema_wait_seconds=15,  # a poll left behind (the red run) ends, not holds the exit
        embedded_temporal=False,
        embedded_redis=False,
        embedded_smtp=False,
        allow_insecure_secrets=True,
        allow_simulated_gateway=True,
    )
    started = asyncio.create_task(runner.run(settings, ("http",)))

    async def waiting() -> bool:
        return polling.is_set() or started.done()

    await eventually(waiting, 30, "the start waiting for the schema")
    assert not started.done(), started
    started.cancel()
    await asyncio.gather(started, return_exceptions=True)
    assert returned.is_set(), "the schema wait was still polling after the start was cancelled"
