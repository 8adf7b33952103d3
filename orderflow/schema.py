"""The schema's one owner: Alembic migrations in orderflow/migrations, applied by `upgrade`.

`orderflow db upgrade` (and the embedded default's start) calls `upgrade`; serving processes on
the distributed engine never change the schema, they `wait_for_schema` until the migration job
has brought it to this code's head. Concurrent upgraders are serialized: PostgreSQL by an
advisory lock, SQLite by its write lock (BEGIN IMMEDIATE), so the second finds nothing to do.
"""

from __future__ import annotations

import logging
import time

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

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


def wait_for_schema(engine: Engine, timeout: float) -> None:
    """Block until the database is at this code's head; fail after `timeout` seconds."""
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
        time.sleep(SCHEMA_POLL_SECONDS)
