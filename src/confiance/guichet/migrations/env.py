"""Alembic environment: runs on the connection the guichet hands over (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

from confiance.guichet.db import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through confiance.guichet.db.Database.migrate()")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
