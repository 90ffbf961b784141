"""Alembic environment: runs migrations on the engine the service passes in (online mode only)."""

from __future__ import annotations

from alembic import context

from cds_service.store import unbounded
from cds_service.store.schema import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    # The service's statement and lock timeouts bound its calls; a migration (an index built on a
    # large table) may take longer.
    context.configure(connection=unbounded(connection), target_metadata=metadata)
    context.run_migrations()
