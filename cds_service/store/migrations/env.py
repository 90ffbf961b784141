"""Alembic environment: runs migrations on the engine the service passes in (online mode only)."""

from __future__ import annotations

from alembic import context

from cds_service.store.schema import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata)
    context.run_migrations()
