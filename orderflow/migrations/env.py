"""Alembic's entry point: runs the migrations on the connection `orderflow.schema` hands it."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import orderflow.db  # noqa: F401  (registers every table on SQLModel.metadata)

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `orderflow db upgrade` (orderflow.schema.upgrade)")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
    transactional_ddl=True,  # SQLite too: the engine issues BEGIN IMMEDIATE, so a migration is atomic
)
with context.begin_transaction():
    context.run_migrations()
