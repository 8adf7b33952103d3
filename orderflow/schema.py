"""The schema's one owner: Alembic migrations in orderflow/migrations, applied by `upgrade`.

`orderflow db upgrade` (and the embedded default's start) calls `upgrade`; serving processes on
the distributed engine never change the schema, they `wait_for_schema` until the migration job
has brought it to this code's head. Concurrent upgraders are serialized: PostgreSQL by an
advisory lock, SQLite by its write lock (BEGIN IMMEDIATE), so the second finds nothing to do.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from orderflow.db import make_engine
from orderflow.errors import OrderflowError

log = logging.getLogger("orderflow.schema")

# pg_advisory_lock key held while migrating: any bigint, the same in every orderflow process
MIGRATION_LOCK_KEY = 0x0F10_5C4E
BASELINE = "0001"  # the revision that creates what create_all used to
SCHEMA_POLL_SECONDS = 0.5  # how often a waiting process looks at alembic_version


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, in code (no alembic.ini): the migrations ship in the package."""
    config = Config()
    config.set_main_option("script_location", "orderflow:migrations")
    config.set_main_option("path_separator", "space")  # version_locations lists are space-separated
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revisions() -> set[str]:
    """The revision(s) this code's migrations end at."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def known_revisions() -> set[str]:
    """Every revision this code has a migration for."""
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revisions(engine: Engine) -> set[str]:
    """The revision(s) recorded in the database's alembic_version (empty before the first)."""
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: Engine, revision: str = "head") -> set[str]:
    """Apply the missing migrations, one upgrader at a time; returns the revisions now applied."""
    with engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
        try:
            config = alembic_config(conn)
            if not MigrationContext.configure(conn).get_current_heads() and inspect(conn).has_table(
                "product"
            ):
                # a database made by create_all before migrations existed: it is the first one
                log.info("tables made before migrations found: recording them as %s", BASELINE)
                command.stamp(config, BASELINE)
                conn.commit()
            command.upgrade(config, revision)
            conn.commit()
        finally:
            if postgres:
                conn.rollback()  # after a failed migration the transaction refuses the unlock
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
    return current_revisions(engine)


def wait_for_schema(
    engine: Engine, timeout: float, abandoned: threading.Event | None = None
) -> None:
    """Block until the database is at this code's head; fail after `timeout` seconds.

    Args:
        engine: the database to watch.
        timeout: seconds to wait before failing with `OrderflowError`.
        abandoned: set by a caller that gave up (a cancelled start); the wait then ends at its
            next poll with `OrderflowError`, instead of polling on in a thread nobody awaits.
    """
    heads = head_revisions()
    deadline = time.monotonic() + timeout
    logged = False
    while True:
        try:
            current = current_revisions(engine)
        except Exception as err:  # the database may not accept connections yet
            current, reason = set(), f"{type(err).__name__}: {err}"
        else:
            reason = f"at {sorted(current) or 'no revision'}, want {sorted(heads)}"
        if current == heads:
            return
        if current and current - known_revisions():
            log.warning("schema is at %s, newer than this code; going on", sorted(current))
            return
        if time.monotonic() > deadline:
            raise OrderflowError(
                f"the database schema is not ready after {timeout:.0f}s ({reason}): "
                "run `orderflow db upgrade` (the migration job) first"
            )
        if not logged:
            log.info("waiting for the migration job: schema %s", reason)
            logged = True
        if abandoned is None:
            time.sleep(SCHEMA_POLL_SECONDS)
        elif abandoned.wait(SCHEMA_POLL_SECONDS):
            raise OrderflowError("the start was cancelled while it waited for the schema")


def write_revision(message: str, directory: Path | None = None) -> Path:
    """Write the next migration, autogenerated from the models' difference to the head schema.

    The difference is taken against a scratch SQLite database brought to head, in batch mode so
    the same file runs on both databases. Review it: a change of meaning (e.g. rupees to paise)
    needs its data step written by hand.
    """
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        upgrade(engine)
        with engine.connect() as conn:
            config = alembic_config(conn)
            if directory is not None:
                config.set_main_option(
                    "version_locations", f"orderflow:migrations/versions {directory}"
                )
            script = command.revision(
                config,
                message=message,
                autogenerate=True,
                rev_id=f"{max(int(r) for r in known_revisions()) + 1:04d}",  # not a count: ids may skip
                version_path=str(directory) if directory is not None else None,
            )
        engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)
