"""Alembic environment: runs migrations on the engine the service passes in (online mode only)."""

from __future__ import annotations

from alembic import context

from cds_service.store.schema import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # The service's statement and lock timeouts bound its calls; a migration (an index built
        # on a large table) may take longer. SET LOCAL: only for this transaction.
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
    context.configure(connection=connection, target_metadata=metadata)
    context.run_migrations()
